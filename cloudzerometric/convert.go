package cloudzerometric

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// toPdata copies rm into the collector's data model, which the translator
// reads. Nothing of rm is kept (the SDK reuses it after Export): slices
// are copied, strings are immutable. Exemplars are left out (the
// translator does not read them).
func toPdata(rm *metricdata.ResourceMetrics) pmetric.Metrics {
	md := pmetric.NewMetrics()
	out := md.ResourceMetrics().AppendEmpty()
	if rm.Resource != nil {
		out.SetSchemaUrl(rm.Resource.SchemaURL())
		putSet(out.Resource().Attributes(), rm.Resource.Set())
	}
	out.ScopeMetrics().EnsureCapacity(len(rm.ScopeMetrics))
	for _, sm := range rm.ScopeMetrics {
		osm := out.ScopeMetrics().AppendEmpty()
		osm.SetSchemaUrl(sm.Scope.SchemaURL)
		osm.Scope().SetName(sm.Scope.Name)
		osm.Scope().SetVersion(sm.Scope.Version)
		putSet(osm.Scope().Attributes(), &sm.Scope.Attributes)
		osm.Metrics().EnsureCapacity(len(sm.Metrics))
		for _, m := range sm.Metrics {
			om := osm.Metrics().AppendEmpty()
			om.SetName(m.Name)
			om.SetDescription(m.Description)
			om.SetUnit(m.Unit)
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				numberPoints(om.SetEmptyGauge().DataPoints(), d.DataPoints, pmetric.NumberDataPoint.SetIntValue)
			case metricdata.Gauge[float64]:
				numberPoints(om.SetEmptyGauge().DataPoints(), d.DataPoints, pmetric.NumberDataPoint.SetDoubleValue)
			case metricdata.Sum[int64]:
				numberPoints(sum(om, d.Temporality, d.IsMonotonic), d.DataPoints, pmetric.NumberDataPoint.SetIntValue)
			case metricdata.Sum[float64]:
				numberPoints(sum(om, d.Temporality, d.IsMonotonic), d.DataPoints, pmetric.NumberDataPoint.SetDoubleValue)
			case metricdata.Histogram[int64]:
				histogram(om, d)
			case metricdata.Histogram[float64]:
				histogram(om, d)
			case metricdata.ExponentialHistogram[int64]:
				expHistogram(om, d)
			case metricdata.ExponentialHistogram[float64]:
				expHistogram(om, d)
			case metricdata.Summary:
				summary(om, d)
			}
			// Any other type is left empty: the translator ignores a metric without data.
		}
	}
	return md
}

func temporality(t metricdata.Temporality) pmetric.AggregationTemporality {
	switch t {
	case metricdata.DeltaTemporality:
		return pmetric.AggregationTemporalityDelta
	case metricdata.CumulativeTemporality:
		return pmetric.AggregationTemporalityCumulative
	}
	return pmetric.AggregationTemporalityUnspecified
}

func sum(m pmetric.Metric, t metricdata.Temporality, monotonic bool) pmetric.NumberDataPointSlice {
	s := m.SetEmptySum()
	s.SetAggregationTemporality(temporality(t))
	s.SetIsMonotonic(monotonic)
	return s.DataPoints()
}

func numberPoints[N int64 | float64, V int64 | float64](out pmetric.NumberDataPointSlice, in []metricdata.DataPoint[N], set func(pmetric.NumberDataPoint, V)) {
	out.EnsureCapacity(len(in))
	for i := range in {
		p := &in[i]
		o := out.AppendEmpty()
		putSet(o.Attributes(), &p.Attributes)
		o.SetStartTimestamp(timestamp(p.StartTime))
		o.SetTimestamp(timestamp(p.Time))
		set(o, V(p.Value))
	}
}

func histogram[N int64 | float64](m pmetric.Metric, d metricdata.Histogram[N]) {
	h := m.SetEmptyHistogram()
	h.SetAggregationTemporality(temporality(d.Temporality))
	out := h.DataPoints()
	out.EnsureCapacity(len(d.DataPoints))
	for i := range d.DataPoints {
		p := &d.DataPoints[i]
		o := out.AppendEmpty()
		putSet(o.Attributes(), &p.Attributes)
		o.SetStartTimestamp(timestamp(p.StartTime))
		o.SetTimestamp(timestamp(p.Time))
		o.SetCount(p.Count)
		o.SetSum(float64(p.Sum))
		o.ExplicitBounds().FromRaw(p.Bounds) // FromRaw copies
		o.BucketCounts().FromRaw(p.BucketCounts)
		if v, ok := p.Min.Value(); ok {
			o.SetMin(float64(v))
		}
		if v, ok := p.Max.Value(); ok {
			o.SetMax(float64(v))
		}
	}
}

func expHistogram[N int64 | float64](m pmetric.Metric, d metricdata.ExponentialHistogram[N]) {
	h := m.SetEmptyExponentialHistogram()
	h.SetAggregationTemporality(temporality(d.Temporality))
	out := h.DataPoints()
	out.EnsureCapacity(len(d.DataPoints))
	for i := range d.DataPoints {
		p := &d.DataPoints[i]
		o := out.AppendEmpty()
		putSet(o.Attributes(), &p.Attributes)
		o.SetStartTimestamp(timestamp(p.StartTime))
		o.SetTimestamp(timestamp(p.Time))
		o.SetCount(p.Count)
		o.SetSum(float64(p.Sum))
		o.SetScale(p.Scale)
		o.SetZeroCount(p.ZeroCount)
		o.SetZeroThreshold(p.ZeroThreshold)
		o.Positive().SetOffset(p.PositiveBucket.Offset)
		o.Positive().BucketCounts().FromRaw(p.PositiveBucket.Counts)
		o.Negative().SetOffset(p.NegativeBucket.Offset)
		o.Negative().BucketCounts().FromRaw(p.NegativeBucket.Counts)
		if v, ok := p.Min.Value(); ok {
			o.SetMin(float64(v))
		}
		if v, ok := p.Max.Value(); ok {
			o.SetMax(float64(v))
		}
	}
}

func summary(m pmetric.Metric, d metricdata.Summary) {
	out := m.SetEmptySummary().DataPoints()
	out.EnsureCapacity(len(d.DataPoints))
	for i := range d.DataPoints {
		p := &d.DataPoints[i]
		o := out.AppendEmpty()
		putSet(o.Attributes(), &p.Attributes)
		o.SetStartTimestamp(timestamp(p.StartTime))
		o.SetTimestamp(timestamp(p.Time))
		o.SetCount(p.Count)
		o.SetSum(p.Sum)
		qs := o.QuantileValues()
		qs.EnsureCapacity(len(p.QuantileValues))
		for _, q := range p.QuantileValues {
			oq := qs.AppendEmpty()
			oq.SetQuantile(q.Quantile)
			oq.SetValue(q.Value)
		}
	}
}

// timestamp: the zero time (a gauge's unset start time) is 0, "unknown".
func timestamp(t time.Time) pcommon.Timestamp {
	if t.IsZero() {
		return 0
	}
	return pcommon.NewTimestampFromTime(t)
}

func putSet(m pcommon.Map, s *attribute.Set) {
	if s.Len() == 0 {
		return
	}
	m.EnsureCapacity(s.Len())
	for it := s.Iter(); it.Next(); {
		kv := it.Attribute()
		putValue(m.PutEmpty(string(kv.Key)), kv.Value)
	}
}

// putValue keeps every type as it is, so that the translator applies the
// collector's rules to it (e.g. a map or bytes as an element is refused).
func putValue(o pcommon.Value, v attribute.Value) {
	switch v.Type() {
	case attribute.BOOL:
		o.SetBool(v.AsBool())
	case attribute.INT64:
		o.SetInt(v.AsInt64())
	case attribute.FLOAT64:
		o.SetDouble(v.AsFloat64())
	case attribute.STRING:
		o.SetStr(v.AsString())
	case attribute.BYTESLICE:
		o.SetEmptyBytes().FromRaw(v.AsByteSlice())
	case attribute.BOOLSLICE:
		s := o.SetEmptySlice()
		for _, x := range v.AsBoolSlice() {
			s.AppendEmpty().SetBool(x)
		}
	case attribute.INT64SLICE:
		s := o.SetEmptySlice()
		for _, x := range v.AsInt64Slice() {
			s.AppendEmpty().SetInt(x)
		}
	case attribute.FLOAT64SLICE:
		s := o.SetEmptySlice()
		for _, x := range v.AsFloat64Slice() {
			s.AppendEmpty().SetDouble(x)
		}
	case attribute.STRINGSLICE:
		s := o.SetEmptySlice()
		for _, x := range v.AsStringSlice() {
			s.AppendEmpty().SetStr(x)
		}
	case attribute.SLICE:
		s := o.SetEmptySlice()
		for _, x := range v.AsSlice() {
			putValue(s.AppendEmpty(), x)
		}
	case attribute.MAP:
		mm := o.SetEmptyMap()
		for _, kv := range v.AsMap() {
			putValue(mm.PutEmpty(string(kv.Key)), kv.Value)
		}
	}
	// EMPTY stays an empty value.
}
