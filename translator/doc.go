// Package translator turns OpenTelemetry metrics into CloudZero allocation
// records. It is pure (no network, no goroutines) but stateful: cumulative
// series and time integrals need each series' previous point, so one
// Translator must see every point of a series, in order.
//
// # Selection
//
// A stream takes the points of the metrics named in Stream.Metrics (exact
// names). A metric may feed several streams; every (point, stream) pair is
// counted in Stats.Points and either contributes, only sets a baseline
// (Stats.Baseline) or is dropped with one reason (Stats.Dropped). Points of
// metrics feeding no stream are counted in Stats.Ignored.
//
// # Element and filter
//
// The element and each filter value come from an attribute, looked up on the
// data point, then the scope, then the resource; the first level that has the
// key decides. A string gives one value, a slice one value per element
// (deduplicated; more than 20 distinct drops the pair), an int, double or
// bool its decimal or true/false text. An empty string or empty slice is
// missing: FilterDefaults supplies the value if configured, otherwise the
// pair is dropped (missing_element, missing_filter_value). Maps and bytes are
// invalid_attribute. Invalid UTF-8 bytes become U+FFFD, as in the JSON sent.
// StaticFilter is added to every record, so every record of
// a stream has the same filter keys. Filters are never truncated: a record over
// CloudZero's limits is dropped (too_many_filter_values, record_too_large).
//
// # Values
//
//	metric                            auto          count         sum            integral
//	Sum delta monotonic               sum           points        sum            unsupported_type
//	Sum delta non-monotonic           (1)           points        net sum        (1)
//	Sum cumulative monotonic          deltas (2)    points        deltas (2)     unsupported_type
//	Gauge, Sum cumulative non-mono.   integral (3)  points        sample sum     integral (3)
//	Histogram, ExpHistogram, Summary  count (2)     count (2)     sum (2)        unsupported_type
//
// (1) dropped as delta_updown_integral: a delta up-down counter gives changes
// of a level whose absolute value is unknown, so it cannot be integrated.
// A negative point of a delta monotonic sum is dropped as negative_delta.
//
// (2) Cumulative points (and Summary, which OTLP does not flag, is treated as
// cumulative) become deltas per series. A series is identified as in the
// contrib cumulativetodelta processor: resource attributes, scope name,
// version and attributes, metric name, unit, type, temporality and
// monotonicity, point attributes and start timestamp; a new start time is a
// new series. The first point of a series counts in full when its start
// timestamp is non-zero, before its timestamp, after Settings.StartTime and
// either later than now - SeriesTTL + MaxFutureSkew or later than the last
// time a series was forgotten (swept, closed, refused at MaxSeries, or
// before a RestoreState) plus
// MaxFutureSkew: an older series may have been tracked, gone quiet and been
// forgotten, its usage already counted; the skew allows for a producer
// clock running ahead. Otherwise it only sets the baseline. A value below the previous one (for
// distributions: a lower count) is a reset and the new value is the usage
// since the reset, never a negative delta. A point not later than the
// series' last point is dropped as out_of_order, which also makes re-sent
// points harmless. Delta distributions are summed as they come.
//
// (3) Time integral in unit-seconds, sample-and-hold: the previous point's
// value holds until the current point, so the interval [t_prev, t_cur) adds
// v_prev × seconds, split at bucket boundaries so each bucket gets its share
// (a point exactly on a boundary closes the previous bucket). The first point
// of a series only sets the baseline. Negative levels integrate to negative
// contributions.
//
// An exact zero contribution is not added, so idle counters do not produce
// records. After aggregation, a record whose total is exactly zero is
// removed and counted as non_positive; a negative total (samples of a gauge
// or up-down counter with value: sum, an integral of a negative level) is an
// output like any other: the delivery core nets it per key and bucket with
// the bucket's other usage, so totals do not depend on how points are split
// into exports (what is still not > 0 when the bucket closes is dropped
// there, as non_positive). Records whose value does not fit CloudZero's
// format (non-finite after adding up, or more than record.MaxValueChars (64)
// characters as a plain decimal of 15 significant digits: from 1e64 up, or
// below about 1e-48) are value_out_of_range. These two reasons count
// records; every other reason counts (point, stream) pairs.
//
// # Buckets and time
//
// A contribution goes to the UTC hour (HOURLY) or day (DAILY) containing the
// point's timestamp (for deltas from cumulative points, the later point); the
// record's timestamp is the bucket start. With now = Settings.Now():
//
//   - A point later than now+MaxFutureSkew is dropped as future_timestamp
//     and does not touch series state: a cumulative or integral series then
//     counts that usage with its next point instead of losing it. A point
//     within the skew whose bucket has not started yet (a clock running
//     ahead, just after a boundary) goes to that bucket; the delivery core
//     sends a bucket only once it has started.
//   - A point older than now-MaxAge is dropped as too_old but still updates
//     series state, so the next point's delta only covers what came after it.
//     The part of an integral before now-MaxAge is dropped the same way.
//   - NaN and ±Inf values are dropped as non_finite and do not touch series
//     state. A distribution whose sum alone is not finite still counts for
//     count streams; sum streams drop that point (non_finite), and a
//     cumulative series takes its next finite sum as the sum's baseline.
//   - Points flagged NoRecordedValue (and number points without a value) are
//     dropped as no_recorded_value. For a gauge integral the flag (a
//     Prometheus staleness marker) ends the series: the held level is
//     integrated up to the marker and the series is forgotten, so a gap
//     after it is not integrated.
//
// # Series state
//
// State is at most MaxSeries series of fixed size (no growth per point).
// When full, the points of new series are dropped as series_limit while
// existing series continue. A series not seen for SeriesTTL (by the clock) is
// forgotten and its next point is treated as a first point. MarshalState and
// RestoreState carry the state across restarts; the hash identifying a series
// is stable across processes.
//
// # Transactions
//
// Begin translates and holds the series state changes until Commit (keep
// them) or Rollback (undo them): a caller that could not queue the records
// rolls back, and the same usage is counted again at the series' next point.
// Changes returns the changed series in the RestoreState format (deleted
// series as tombstones), to persist them before Commit. Translate is Begin+Commit. Streams in count mode, sample sums and delta
// sums keep no state.
package translator
