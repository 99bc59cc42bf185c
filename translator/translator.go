package translator // import "github.com/cloudzero-otel/cloudzeroexporter/translator"

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// ValueMode says what a stream's record value measures (see the package doc).
type ValueMode string

const (
	ValueAuto     ValueMode = "auto"
	ValueCount    ValueMode = "count"
	ValueSum      ValueMode = "sum"
	ValueIntegral ValueMode = "integral"
)

// Stream maps metrics onto one CloudZero allocation stream.
type Stream struct {
	Name        string
	Metrics     []string
	Granularity record.Granularity
	// ElementName is the attribute key whose value is the record's element.
	ElementName string
	// Filter maps a CloudZero dimension key (e.g. "custom:feature") to an
	// attribute key.
	Filter map[string]string
	// StaticFilter holds constant dimension values added to every record.
	StaticFilter map[string][]string
	// FilterDefaults maps a dimension key of Filter to the value used when
	// its attribute is missing.
	FilterDefaults map[string]string
	Value          ValueMode // empty means auto
}

// Settings configures a Translator; zero durations take the defaults.
type Settings struct {
	Streams       []Stream
	MaxSeries     int           // default 100000
	SeriesTTL     time.Duration // default 1h
	MaxAge        time.Duration // default 168h
	MaxFutureSkew time.Duration // default 5m
	// StartTime is when the exporter started: the first cumulative point of a
	// series that started later counts in full. Default: Now() at New.
	StartTime time.Time
	Now       func() time.Time // default time.Now
}

// DropReason says why a point (or, for non_positive and value_out_of_range,
// an aggregated record) was not sent.
type DropReason string

const (
	DropMissingElement      DropReason = "missing_element"
	DropMissingFilterValue  DropReason = "missing_filter_value"
	DropInvalidAttribute    DropReason = "invalid_attribute"
	DropTooManyFilterValues DropReason = "too_many_filter_values"
	DropRecordTooLarge      DropReason = "record_too_large"
	DropNonFinite           DropReason = "non_finite"
	DropNoRecordedValue     DropReason = "no_recorded_value"
	DropMissingSum          DropReason = "missing_sum"
	DropNegativeDelta       DropReason = "negative_delta"
	DropDeltaUpDownIntegral DropReason = "delta_updown_integral"
	DropUnsupportedType     DropReason = "unsupported_type"
	DropFutureTimestamp     DropReason = "future_timestamp"
	DropTooOld              DropReason = "too_old"
	DropSeriesLimit         DropReason = "series_limit"
	DropOutOfOrder          DropReason = "out_of_order"
	DropNonPositive         DropReason = "non_positive"
	DropValueOutOfRange     DropReason = "value_out_of_range"
)

// Stats describes one Translate call.
type Stats struct {
	Points   int // (point, stream) pairs selected
	Ignored  int // points of metrics feeding no stream
	Baseline int // pairs that only set a series baseline
	// Dropped counts drops by reason; nil when nothing was dropped.
	Dropped map[DropReason]int
	// DroppedValue is what the drops would have contributed, where known
	// (finite values only); it includes clipped parts of integrals.
	DroppedValue map[DropReason]float64
	Series       int // series tracked after the call
}

func (s *Stats) drop(r DropReason, v float64) {
	s.dropValue(r, v)
	s.Dropped[r]++
}

// dropValue records a dropped value without counting a drop (used alone
// for the clipped part of an integral).
func (s *Stats) dropValue(r DropReason, v float64) {
	if s.Dropped == nil {
		s.Dropped = map[DropReason]int{}
		s.DroppedValue = map[DropReason]float64{}
	}
	if v != 0 && finite(v) {
		s.DroppedValue[r] += v
	}
}

// Translator converts metrics to records. It is safe for concurrent use.
type Translator struct {
	mu       sync.Mutex
	streams  []*stream
	byMetric map[string][]*stream

	maxSeries         int
	ttl, maxAge, skew int64 // nanoseconds
	start             int64 // unix nanoseconds
	lastForget        int64 // clock of the last time a series was forgotten (unix ns)
	now               func() time.Time
	series            map[seriesID]*series
	lastSweep         int64
	sweepEvery        int64
	hasher            hasher
	plans             []plan
	agg               map[string]*aggEntry // by raw key
	touched           []*aggEntry          // entries added to in this call
	out               []Output             // this call's records, reused by the next
	epoch             uint64
	keyBuf, jsonBuf   []byte
	undoBuf           []undoEntry // reused by each Tx
	elemVals          []string
}

// stream is a compiled Stream plus per-call scratch (guarded by the lock).
type stream struct {
	Stream
	idx      int
	overhead int   // bound on a record's encoded size without element and filter values
	mode     int   // index of Value in auto, count, sum, integral
	bucket   int64 // nanoseconds
	filters  []filterSpec
	static   []record.Dimension
	dims     []record.Dimension // scratch for the record being built
}

type filterSpec struct {
	dim, attr, def string
	vals           []string // scratch
}

const (
	hour       = int64(time.Hour)
	day        = 24 * hour
	maxStreams = 1 << 16 // the aggregation key prefixes a 2-byte stream index
)

// New compiles the streams and returns a Translator.
func New(s Settings) (*Translator, error) {
	if s.Now == nil {
		s.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration, name string) error {
		if *d < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	if err := errors.Join(def(&s.SeriesTTL, time.Hour, "series TTL"), def(&s.MaxAge, 168*time.Hour, "max age"),
		def(&s.MaxFutureSkew, 5*time.Minute, "max future skew")); err != nil {
		return nil, err
	}
	if s.MaxSeries < 0 {
		return nil, errors.New("max series must not be negative")
	}
	if s.MaxSeries == 0 {
		s.MaxSeries = 100000
	}
	if s.StartTime.IsZero() {
		s.StartTime = s.Now()
	}
	if len(s.Streams) >= maxStreams {
		return nil, fmt.Errorf("at most %d streams", maxStreams-1)
	}
	t := &Translator{
		byMetric:   map[string][]*stream{},
		maxSeries:  s.MaxSeries,
		ttl:        int64(s.SeriesTTL),
		maxAge:     int64(s.MaxAge),
		skew:       int64(s.MaxFutureSkew),
		start:      s.StartTime.UnixNano(),
		now:        s.Now,
		series:     map[seriesID]*series{},
		sweepEvery: int64(time.Minute),
		agg:        map[string]*aggEntry{},
		epoch:      1,
	}
	t.hasher.init()
	names := map[string]bool{}
	for i, cfg := range s.Streams {
		st, err := compile(cfg, i)
		if err == nil && names[cfg.Name] {
			err = errors.New("duplicate stream name")
		}
		if err != nil {
			return nil, fmt.Errorf("stream %d (%q): %w", i, cfg.Name, err)
		}
		names[cfg.Name] = true
		t.streams = append(t.streams, st)
		for _, m := range slices.Compact(slices.Sorted(slices.Values(cfg.Metrics))) {
			t.byMetric[m] = append(t.byMetric[m], st)
		}
	}
	return t, nil
}

func compile(cfg Stream, idx int) (*stream, error) {
	st := &stream{Stream: cfg, idx: idx}
	switch cfg.Granularity {
	case record.Hourly:
		st.bucket = hour
	case record.Daily:
		st.bucket = day
	default:
		return nil, record.ErrBadGranularity
	}
	if st.Value == "" {
		st.Value = ValueAuto
	}
	st.mode = slices.Index([]ValueMode{ValueAuto, ValueCount, ValueSum, ValueIntegral}, st.Value)
	if st.mode < 0 {
		return nil, fmt.Errorf("value must be auto, count, sum or integral, not %q", cfg.Value)
	}
	switch {
	case cfg.Name == "":
		return nil, errors.New("empty name")
	case len(cfg.Metrics) == 0:
		return nil, errors.New("no metrics")
	case cfg.ElementName == "":
		return nil, errors.New("empty element_name")
	case len(cfg.Filter)+len(cfg.StaticFilter) > record.MaxFilterKeys:
		return nil, fmt.Errorf("more than %d filter keys in filter and static_filter", record.MaxFilterKeys)
	}
	for dim, attr := range cfg.Filter {
		if dim == "" || attr == "" {
			return nil, errors.New("empty filter key or attribute")
		}
		if _, ok := cfg.StaticFilter[dim]; ok {
			return nil, fmt.Errorf("filter key %q also in static_filter", dim)
		}
		f := filterSpec{dim: dim, attr: attr}
		if d, ok := cfg.FilterDefaults[dim]; ok {
			if d == "" {
				return nil, fmt.Errorf("empty default for filter key %q", dim)
			}
			f.def = d
		}
		st.filters = append(st.filters, f)
	}
	for dim := range cfg.FilterDefaults {
		if _, ok := cfg.Filter[dim]; !ok {
			return nil, fmt.Errorf("filter_defaults key %q is not in filter", dim)
		}
	}
	for dim, vals := range cfg.StaticFilter {
		// Sorted and deduplicated once, so record.AppendKey's in-place
		// normalisation never changes the configuration.
		vals = slices.Compact(slices.Sorted(slices.Values(vals)))
		if dim == "" || len(vals) == 0 || slices.Contains(vals, "") {
			return nil, fmt.Errorf("static_filter key %q: empty key, list or value", dim)
		}
		if len(vals) > record.MaxValuesPerKey {
			return nil, fmt.Errorf("static_filter key %q: %w", dim, record.ErrTooManyValues)
		}
		st.static = append(st.static, record.Dimension{Key: dim, Values: vals})
	}
	slices.SortFunc(st.filters, func(a, b filterSpec) int { return cmp.Compare(a.dim, b.dim) })
	slices.SortFunc(st.static, func(a, b record.Dimension) int { return cmp.Compare(a.Key, b.Key) })
	st.dims = make([]record.Dimension, 0, len(st.filters)+len(st.static))
	// The longest record skeleton: one-character values and a full value.
	for i := range st.filters {
		st.filters[i].vals = []string{"x"}
	}
	k, err := record.AppendKey(nil, st.record(0, "x"))
	if err != nil {
		return nil, err
	}
	st.overhead = len(k) + len(`""}`) + record.MaxValueChars
	return st, nil
}
