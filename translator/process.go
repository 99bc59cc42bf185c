package translator

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// kind classifies a metric by how its points turn into usage.
type kind uint8

const (
	kindUnsupported kind = iota
	kindLevel            // gauge, cumulative non-monotonic sum
	kindDeltaCounter
	kindDeltaUpDown
	kindCumCounter
	kindDeltaDist // delta histogram, exponential histogram
	kindCumDist   // cumulative histogram, exponential histogram, summary
)

func classify(m pmetric.Metric) kind {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return kindLevel
	case pmetric.MetricTypeSum:
		s := m.Sum()
		switch t := s.AggregationTemporality(); {
		case t == pmetric.AggregationTemporalityDelta && s.IsMonotonic():
			return kindDeltaCounter
		case t == pmetric.AggregationTemporalityDelta:
			return kindDeltaUpDown
		case t == pmetric.AggregationTemporalityCumulative && s.IsMonotonic():
			return kindCumCounter
		case t == pmetric.AggregationTemporalityCumulative:
			return kindLevel
		}
	case pmetric.MetricTypeHistogram:
		return distKind(m.Histogram().AggregationTemporality())
	case pmetric.MetricTypeExponentialHistogram:
		return distKind(m.ExponentialHistogram().AggregationTemporality())
	case pmetric.MetricTypeSummary:
		return kindCumDist
	}
	return kindUnsupported
}

func distKind(t pmetric.AggregationTemporality) kind {
	switch t {
	case pmetric.AggregationTemporalityDelta:
		return kindDeltaDist
	case pmetric.AggregationTemporalityCumulative:
		return kindCumDist
	}
	return kindUnsupported
}

// calc is how one stream computes its contribution from one point.
type calc uint8

const (
	calcInvalid  calc = iota
	calcSample        // the point's value (or distribution sum) as is
	calcOne           // 1 per point
	calcDelta         // difference from the series' previous cumulative point
	calcIntegral      // previous level × seconds since the previous point
)

type plan struct {
	s      *stream
	calc   calc
	useSum bool       // distributions: sum instead of count
	reason DropReason // for calcInvalid
}

// plans[kind][mode] with modes in the order auto, count, sum, integral.
var plans = [...][4]calc{
	kindLevel:        {calcIntegral, calcOne, calcSample, calcIntegral},
	kindDeltaCounter: {calcSample, calcOne, calcSample, calcInvalid},
	kindDeltaUpDown:  {calcInvalid, calcOne, calcSample, calcInvalid},
	kindCumCounter:   {calcDelta, calcOne, calcDelta, calcInvalid},
	kindDeltaDist:    {calcSample, calcSample, calcSample, calcInvalid},
	kindCumDist:      {calcDelta, calcDelta, calcDelta, calcInvalid},
}

func planFor(s *stream, k kind) plan {
	p := plan{s: s, calc: plans[k][s.mode], reason: DropUnsupportedType}
	if k == kindDeltaUpDown && p.calc == calcInvalid && s.Value != ValueCount {
		p.reason = DropDeltaUpDownIntegral
	}
	p.useSum = (k == kindDeltaDist || k == kindCumDist) && s.Value == ValueSum
	return p
}

// point is one data point of any type, reduced to what the translator uses.
type point struct {
	attrs     pcommon.Map
	start, ts int64
	v         float64 // number value, or distribution count
	iv        int64   // v exactly, when isInt: float64 is exact only up to 2^53
	isInt     bool
	sum       float64
	hasSum    bool
	noValue   bool
}

// Translate converts md into records aggregated by (stream, key) and keeps
// the series state it advanced. It is Begin followed by Commit.
func (t *Translator) Translate(md pmetric.Metrics) (*record.Set, Stats) {
	tx := t.Begin(md)
	return tx.Records(), tx.Commit()
}

// translate runs one call under t.mu, recording in tx how to undo its
// changes to the series state.
func (t *Translator) translate(md pmetric.Metrics, tx *Tx) {
	now := t.now().UnixNano()
	if now-t.lastSweep >= t.sweepEvery {
		t.sweep(now, tx)
	}
	c := callCtx{t: t, st: &tx.stats, tx: tx, now: now}
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		c.res = rm.Resource().Attributes()
		c.resHashed = false
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			sm := sms.At(j)
			c.scope = sm.Scope()
			c.scopeHashed = false
			ms := sm.Metrics()
			for k := 0; k < ms.Len(); k++ {
				c.metric(ms.At(k))
			}
		}
	}
	tx.out = t.flush(&tx.stats)
	tx.stats.Series = len(t.series)
}

// callCtx carries one Translate call's position in the pdata tree.
type callCtx struct {
	t           *Translator
	st          *Stats
	tx          *Tx
	now         int64
	res         pcommon.Map
	scope       pcommon.InstrumentationScope
	resHashed   bool
	scopeHashed bool
	resHash     seriesID
	scopeHash   seriesID
	needState   bool
	startInID   bool  // the start timestamp is part of the series identity
	finest      int64 // smallest bucket among the metric's streams
	kind        kind
}

func (c *callCtx) metric(m pmetric.Metric) {
	t := c.t
	streams := t.byMetric[m.Name()]
	if len(streams) == 0 {
		c.st.Ignored += dataPointCount(m)
		return
	}
	c.kind = classify(m)
	t.plans = t.plans[:0]
	c.needState, c.finest = false, day
	for _, s := range streams {
		p := planFor(s, c.kind)
		t.plans = append(t.plans, p)
		c.needState = c.needState || p.calc == calcDelta || p.calc == calcIntegral
		c.finest = min(c.finest, s.bucket)
	}
	if c.needState {
		c.hashPrefix(m)
	}
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		c.numbers(m.Gauge().DataPoints())
	case pmetric.MetricTypeSum:
		c.numbers(m.Sum().DataPoints())
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			c.point(point{attrs: dp.Attributes(), start: int64(dp.StartTimestamp()), ts: int64(dp.Timestamp()),
				v: float64(dp.Count()), iv: int64(dp.Count()), isInt: true, sum: dp.Sum(), hasSum: dp.HasSum(), noValue: dp.Flags().NoRecordedValue()})
		}
	case pmetric.MetricTypeExponentialHistogram:
		dps := m.ExponentialHistogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			c.point(point{attrs: dp.Attributes(), start: int64(dp.StartTimestamp()), ts: int64(dp.Timestamp()),
				v: float64(dp.Count()), iv: int64(dp.Count()), isInt: true, sum: dp.Sum(), hasSum: dp.HasSum(), noValue: dp.Flags().NoRecordedValue()})
		}
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			c.point(point{attrs: dp.Attributes(), start: int64(dp.StartTimestamp()), ts: int64(dp.Timestamp()),
				v: float64(dp.Count()), iv: int64(dp.Count()), isInt: true, sum: dp.Sum(), hasSum: true, noValue: dp.Flags().NoRecordedValue()})
		}
	}
}

func (c *callCtx) numbers(dps pmetric.NumberDataPointSlice) {
	for i := 0; i < dps.Len(); i++ {
		dp := dps.At(i)
		p := point{attrs: dp.Attributes(), start: int64(dp.StartTimestamp()), ts: int64(dp.Timestamp()),
			noValue: dp.Flags().NoRecordedValue()}
		switch dp.ValueType() {
		case pmetric.NumberDataPointValueTypeInt:
			p.iv, p.isInt = dp.IntValue(), true
			p.v = float64(p.iv)
		case pmetric.NumberDataPointValueTypeDouble:
			p.v = dp.DoubleValue()
		default:
			p.noValue = true
		}
		c.point(p)
	}
}

func dataPointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}

// sample is what a stateless plan contributes from p.
func (pl *plan) sample(p *point) float64 {
	switch {
	case pl.calc == calcOne:
		return 1
	case pl.calc != calcSample:
		return 0
	case pl.useSum:
		return p.sum
	}
	return p.v
}

// stateResult is what the series state says about a point.
type stateResult struct {
	drop       DropReason // series_limit or out_of_order
	baseline   bool
	d1, d2     float64 // deltas of value (or count) and of sum
	noSumDelta bool    // previous sum unknown
	prevTS     int64   // integral interval start
	prevV      float64 // level held over the interval
}

func (c *callCtx) dropAll(r DropReason, p *point) {
	for i := range c.t.plans {
		c.st.drop(r, c.t.plans[i].sample(p))
	}
}

func (c *callCtx) point(p point) {
	t, st := c.t, c.st
	st.Points += len(t.plans)
	// A gauge point without value (a Prometheus staleness marker) ends the
	// series: the held level is integrated up to it, then forgotten.
	closing := p.noValue && c.needState && c.kind == kindLevel
	if p.noValue && !closing {
		c.dropAll(DropNoRecordedValue, &p)
		return
	}
	if !closing && !finite(p.v) {
		c.dropAll(DropNonFinite, &p)
		return
	}
	// A distribution's non-finite sum costs only the sum streams this
	// point; the series takes its next finite sum as the sum's baseline.
	sumNonFinite := p.hasSum && !finite(p.sum)
	if sumNonFinite {
		p.hasSum, p.sum = false, 0
	}
	// Future points leave the state alone: the next point covers their
	// usage. A point within the skew whose bucket has not started yet (a
	// clock running ahead, just after a boundary) goes to that bucket,
	// which the delivery core sends only once it has started.
	if p.ts > c.now+t.skew {
		c.dropAll(DropFutureTimestamp, &p)
		return
	}
	var sr stateResult
	if c.needState {
		sr = c.advance(&p, closing)
	}
	tooOld := p.ts < c.now-t.maxAge
	for i := range t.plans {
		pl := &t.plans[i]
		v := pl.sample(&p)
		switch {
		case closing && pl.calc != calcIntegral:
			st.drop(DropNoRecordedValue, 0)
			continue
		case pl.calc == calcInvalid:
			st.drop(pl.reason, 0)
			continue
		case pl.useSum && sumNonFinite:
			st.drop(DropNonFinite, 0)
			continue
		case pl.useSum && !p.hasSum:
			st.drop(DropMissingSum, 0)
			continue
		case c.kind == kindDeltaCounter && p.v < 0:
			st.drop(DropNegativeDelta, v)
			continue
		case pl.calc == calcDelta || pl.calc == calcIntegral:
			if sr.drop != "" {
				st.drop(sr.drop, 0)
				continue
			}
			if sr.baseline || (pl.useSum && sr.noSumDelta) {
				st.Baseline++
				continue
			}
			switch {
			case pl.calc == calcIntegral:
				v = sr.prevV * seconds(p.ts-sr.prevTS)
			case pl.useSum:
				v = sr.d2
			default:
				v = sr.d1
			}
		}
		if tooOld {
			st.drop(DropTooOld, v)
			continue
		}
		if r := t.buildKey(c, pl.s, &p, trunc(p.ts, pl.s.bucket)); r != "" {
			st.drop(r, v)
			continue
		}
		if pl.calc == calcIntegral {
			t.integrate(st, pl.s, sr.prevTS, p.ts, sr.prevV, c.now-t.maxAge)
		} else if v != 0 {
			t.add(v)
		}
	}
}

// integrate adds level × seconds over [from, to), split at the stream's
// bucket boundaries (a point on a boundary closes the previous bucket). The
// part before cutoff is dropped as too_old. t.keyBuf holds the stream's key.
func (t *Translator) integrate(st *Stats, s *stream, from, to int64, level float64, cutoff int64) {
	if level == 0 {
		return
	}
	if from < cutoff {
		st.dropValue(DropTooOld, level*seconds(cutoff-from))
		from = cutoff
	}
	for b := trunc(to-1, s.bucket); b+s.bucket > from && b < to; b -= s.bucket {
		t.setKeyBucket(b)
		t.add(level * seconds(min(to, b+s.bucket)-max(from, b)))
	}
}

// trunc returns the start of the bucket of size b containing ts.
func trunc(ts, b int64) int64 {
	m := ts % b
	if m < 0 {
		m += b
	}
	return ts - m
}

func seconds(ns int64) float64 { return float64(ns) / 1e9 }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// countsFromStart says whether the first point seen of a cumulative series
// that started at start is all usage not counted yet. It is if the series
// started after the exporter and cannot be a series that was tracked, went
// quiet and was forgotten (whose usage was counted): it started less than a
// TTL ago, or after the last time any series was forgotten. Each bound
// allows for the skew the sender's clock may run ahead by. The second bound
// matters where every series of an instrument carries its start (the Go
// SDK's cumulative counters): a customer first seen an hour after the
// counter was created still counts in full.
func (t *Translator) countsFromStart(start, now int64) bool {
	return start > t.start && (start > now-t.ttl+t.skew || start > t.lastForget+t.skew)
}

// forgot records that a series may have been forgotten at now (a clock
// stepping back does not move it back).
func (t *Translator) forgot(now int64) { t.lastForget = max(t.lastForget, now) }

// advance applies p to its series and says what each stateful plan gets.
// A closing point ends the series.
func (c *callCtx) advance(p *point, closing bool) stateResult {
	t := c.t
	id := c.seriesID(p)
	s := t.series[id]
	c.remember(id, s)
	expired := s != nil && c.now-s.seen > t.ttl // not swept yet
	if expired || closing {
		t.forgot(c.now)
	}
	switch {
	case (s == nil || expired) && closing:
		delete(t.series, id)
		return stateResult{drop: DropNoRecordedValue}
	case s == nil && len(t.series) >= t.maxSeries:
		t.forgot(c.now) // its usage until now is dropped, not counted later
		return stateResult{drop: DropSeriesLimit}
	case s == nil || expired:
		sr := stateResult{baseline: true}
		if c.kind != kindLevel && p.start != 0 && p.start < p.ts && t.countsFromStart(p.start, c.now) {
			sr = stateResult{d1: p.v, d2: p.sum}
		}
		if s == nil {
			s = new(series)
			t.series[id] = s
		}
		*s = newSeries(p, c.now)
		return sr
	case p.ts <= s.ts:
		s.seen = c.now
		return stateResult{drop: DropOutOfOrder}
	}
	sr := stateResult{prevTS: s.ts, prevV: s.v}
	if c.kind != kindLevel {
		if p.v < s.v || (p.isInt && s.isInt && p.iv < s.iv) { // reset: the new value is the usage since
			sr.d1, sr.d2 = p.v, p.sum
		} else {
			sr.d1, sr.d2 = p.v-s.v, p.sum-s.sum
			if p.isInt && s.isInt { // exact even past 2^53
				sr.d1 = float64(uint64(p.iv) - uint64(s.iv))
			}
			sr.noSumDelta = s.noSum
		}
	}
	if closing {
		delete(t.series, id)
	} else {
		*s = newSeries(p, c.now)
	}
	return sr
}
