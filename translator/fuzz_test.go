package translator_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// fuzzInput turns fuzz bytes into metrics; once the bytes run out it reads
// zeros, so every input is a valid program.
type fuzzInput struct{ b []byte }

func (in *fuzzInput) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func (in *fuzzInput) n(k int) int { return int(in.byte()) % k }

func (in *fuzzInput) u64() uint64 {
	var buf [8]byte
	for i := range buf {
		buf[i] = in.byte()
	}
	return binary.LittleEndian.Uint64(buf[:])
}

func (in *fuzzInput) value() float64 {
	switch in.n(10) {
	case 0:
		return math.NaN()
	case 1:
		return math.Inf(1 - 2*in.n(2))
	case 2:
		return math.Float64frombits(in.u64())
	case 3:
		return 1e-30
	case 4:
		return 1e30
	case 5:
		return float64(int8(in.byte())) / 8
	}
	return float64(in.byte())
}

var fuzzStrings = []string{"a", "b", "", "c\"\\\n", "ü", "\xff", strings.Repeat("long", 700)}

func (in *fuzzInput) attr(m pcommon.Map, key string) {
	switch in.n(9) {
	case 0: // absent
	case 1:
		m.PutInt(key, int64(int8(in.byte())))
	case 2:
		m.PutDouble(key, in.value())
	case 3:
		m.PutBool(key, in.n(2) == 0)
	case 4:
		s := m.PutEmptySlice(key)
		for range in.n(26) {
			s.AppendEmpty().SetStr(fuzzStrings[in.n(len(fuzzStrings))] + strconv.Itoa(in.n(30)))
		}
	case 5:
		m.PutEmptyMap(key).PutStr("k", "v")
	case 6:
		m.PutEmptyBytes(key).FromRaw([]byte{1})
	default:
		m.PutStr(key, fuzzStrings[in.n(len(fuzzStrings))])
	}
}

func (in *fuzzInput) attrs(m pcommon.Map) {
	for _, k := range []string{"tenant", "feature", "env"} {
		in.attr(m, k)
	}
}

// Metric names fix the type, except "z" whose type the input chooses: "d" is
// always a delta monotonic sum, for the conservation invariant.
var fuzzNames = []string{"d", "g", "u", "c", "h", "x", "s", "z", "other"}

var (
	fuzzNow   = time.Date(2026, 1, 2, 1, 58, 0, 0, time.UTC)
	fuzzStart = fuzzNow.Add(-2 * time.Hour)
)

func (in *fuzzInput) metrics(now time.Time) (pmetric.Metrics, []float64) {
	md := pmetric.NewMetrics()
	var deltas []float64 // finite values of "d" points
	for range 1 + in.n(2) {
		rm := md.ResourceMetrics().AppendEmpty()
		in.attrs(rm.Resource().Attributes())
		sm := rm.ScopeMetrics().AppendEmpty()
		sm.Scope().SetName("s" + strconv.Itoa(in.n(2)))
		in.attrs(sm.Scope().Attributes())
		for range in.n(5) {
			m := sm.Metrics().AppendEmpty()
			name := fuzzNames[in.n(len(fuzzNames))]
			m.SetName(name)
			typ := slices.Index(fuzzNames, name)
			if name == "z" || name == "other" {
				typ = in.n(7)
			}
			npoints := in.n(6)
			ts := func() pcommon.Timestamp {
				if in.n(4) == 0 { // anywhere within ±22 days: too old, future
					return pcommon.NewTimestampFromTime(now.Add(time.Duration(int16(in.u64())) * time.Minute))
				}
				return pcommon.NewTimestampFromTime(now.Add(-time.Duration(in.byte()) * time.Minute))
			}
			start := func(t pcommon.Timestamp) pcommon.Timestamp {
				switch in.n(4) {
				case 0:
					return 0
				case 1:
					return pcommon.NewTimestampFromTime(fuzzStart.Add(-time.Hour))
				case 2:
					return t
				}
				return pcommon.NewTimestampFromTime(fuzzStart.Add(time.Duration(in.n(60)) * time.Minute))
			}
			flags := func() pmetric.DataPointFlags {
				return pmetric.DefaultDataPointFlags.WithNoRecordedValue(in.n(16) == 0)
			}
			switch typ {
			case 0, 2, 3: // d: delta monotonic; u: delta up-down; c: cumulative monotonic
				s := m.SetEmptySum()
				s.SetIsMonotonic(typ != 2)
				s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
				if typ == 3 {
					s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				}
				for range npoints {
					dp := s.DataPoints().AppendEmpty()
					in.attrs(dp.Attributes())
					dp.SetTimestamp(ts())
					dp.SetStartTimestamp(start(dp.Timestamp()))
					dp.SetFlags(flags())
					if in.n(2) == 0 {
						dp.SetIntValue(int64(in.n(256)) - 8)
					} else {
						dp.SetDoubleValue(in.value())
					}
					if name == "d" {
						if v := numberValue(dp); !math.IsNaN(v) && !math.IsInf(v, 0) {
							deltas = append(deltas, v)
						}
					}
				}
			case 1: // g: gauge
				g := m.SetEmptyGauge()
				for range npoints {
					dp := g.DataPoints().AppendEmpty()
					in.attrs(dp.Attributes())
					dp.SetTimestamp(ts())
					dp.SetFlags(flags())
					dp.SetDoubleValue(in.value())
				}
			case 4: // h: histogram, either temporality
				h := m.SetEmptyHistogram()
				h.SetAggregationTemporality(pmetric.AggregationTemporality(in.n(3)))
				for range npoints {
					dp := h.DataPoints().AppendEmpty()
					in.attrs(dp.Attributes())
					dp.SetTimestamp(ts())
					dp.SetStartTimestamp(start(dp.Timestamp()))
					dp.SetFlags(flags())
					dp.SetCount(uint64(in.byte()))
					if in.n(3) > 0 {
						dp.SetSum(in.value())
					}
				}
			case 5: // x: exponential histogram
				h := m.SetEmptyExponentialHistogram()
				h.SetAggregationTemporality(pmetric.AggregationTemporality(in.n(3)))
				for range npoints {
					dp := h.DataPoints().AppendEmpty()
					in.attrs(dp.Attributes())
					dp.SetTimestamp(ts())
					dp.SetStartTimestamp(start(dp.Timestamp()))
					dp.SetCount(uint64(in.byte()))
					dp.SetSum(in.value())
				}
			case 6: // s: summary
				s := m.SetEmptySummary()
				for range npoints {
					dp := s.DataPoints().AppendEmpty()
					in.attrs(dp.Attributes())
					dp.SetTimestamp(ts())
					dp.SetStartTimestamp(start(dp.Timestamp()))
					dp.SetCount(uint64(in.byte()))
					dp.SetSum(in.value())
				}
			}
		}
	}
	return md, deltas
}

func numberValue(dp pmetric.NumberDataPoint) float64 {
	if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
		return float64(dp.IntValue())
	}
	return dp.DoubleValue()
}

func fuzzStreams() (all, deltaOnly []translator.Stream) {
	metrics := []string{"d", "g", "u", "c", "h", "x", "s", "z"}
	for _, g := range []record.Granularity{record.Hourly, record.Daily} {
		for _, m := range []translator.ValueMode{translator.ValueAuto, translator.ValueCount, translator.ValueSum, translator.ValueIntegral} {
			all = append(all, translator.Stream{Name: string(g) + "-" + string(m), Metrics: metrics, Granularity: g,
				ElementName: "tenant", Value: m,
				Filter:         map[string]string{"custom:feature": "feature", "tag:env": "env"},
				FilterDefaults: map[string]string{"tag:env": "none"}})
		}
	}
	wide := translator.Stream{Name: "wide", Metrics: metrics, Granularity: record.Hourly, ElementName: "feature",
		Filter:       map[string]string{"custom:tenant": "tenant", "tag:env": "env"},
		StaticFilter: map[string][]string{"tag:a": {"x", "y", "x"}, "tag:b": {"1"}, "tag:c": {"2"}}}
	all = append(all, wide)
	deltaOnly = []translator.Stream{
		{Name: "d-hourly", Metrics: []string{"d"}, Granularity: record.Hourly, ElementName: "tenant",
			Filter: map[string]string{"custom:feature": "feature"}},
		{Name: "d-daily", Metrics: []string{"d"}, Granularity: record.Daily, ElementName: "env",
			Filter: map[string]string{"custom:feature": "feature"}, FilterDefaults: map[string]string{"custom:feature": "none"}},
	}
	return all, deltaOnly
}

func FuzzTranslate(f *testing.F) {
	f.Add([]byte{})
	// Deterministic pseudo-random seeds: unlike hand-written bytes, they
	// reach every metric type, and most of them produce records.
	for i := range 16 {
		r := rand.New(rand.NewPCG(uint64(i), 42))
		seed := make([]byte, 100+r.IntN(2000))
		for j := range seed {
			seed[j] = byte(r.Uint32())
		}
		f.Add(seed)
	}
	all, deltaOnly := fuzzStreams()
	netting := []translator.Stream{{Name: "u-net", Metrics: []string{"u"}, Granularity: record.Hourly, ElementName: "tenant", Value: translator.ValueSum}}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{b: data}
		now := fuzzNow
		clock := func() time.Time { return now }
		trAll, err := translator.New(translator.Settings{Streams: all, StartTime: fuzzStart, Now: clock, MaxSeries: 20})
		if err != nil {
			t.Fatal(err)
		}
		trDelta, err := translator.New(translator.Settings{Streams: deltaOnly, StartTime: fuzzStart, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		trNet, err := translator.New(translator.Settings{Streams: netting, StartTime: fuzzStart, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		for call := range 1 + in.n(3) {
			now = now.Add(time.Duration(in.n(120)) * time.Minute)
			md, deltas := in.metrics(now)
			set, st := trAll.Translate(md)
			checkRecords(t, set, now)
			if call == 1 { // state survives a round trip
				state, err := trAll.MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				if err := trAll.RestoreState(state); err != nil {
					t.Fatal(err)
				}
			}
			if st.Series > 20 {
				t.Fatalf("%d series tracked, limit 20", st.Series)
			}

			set, st = trDelta.Translate(md)
			checkRecords(t, set, now)
			checkConservation(t, set, st, deltas, len(deltaOnly))
			checkSplitInvariance(t, deltaOnly, clock, md, set)
			// Delta up-down sums with value: sum net to the same totals too:
			// negative totals are outputs, netted by the delivery core.
			set, _ = trNet.Translate(md)
			checkSplitInvariance(t, netting, clock, md, set)
		}
	})
}

// checkSplitInvariance: for delta input, the records do not depend on how
// the points are split into exports. The same points translated in two
// exports (even and odd points) give the same total per record key as in
// one.
func checkSplitInvariance(t *testing.T, streams []translator.Stream, clock func() time.Time, md pmetric.Metrics, whole *record.Set) {
	tr, err := translator.New(translator.Settings{Streams: streams, StartTime: fuzzStart, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	parts := record.NewSet()
	for parity := range 2 {
		part := pmetric.NewMetrics()
		md.CopyTo(part)
		for _, rm := range part.ResourceMetrics().All() {
			for _, sm := range rm.ScopeMetrics().All() {
				for _, m := range sm.Metrics().All() {
					if m.Type() == pmetric.MetricTypeSum {
						i := 0
						m.Sum().DataPoints().RemoveIf(func(pmetric.NumberDataPoint) bool { i++; return i%2 == parity })
					}
				}
			}
		}
		set, _ := tr.Translate(part)
		for _, stream := range set.Streams() {
			for k, v := range set.Records(stream) {
				parts.Add(stream, k, v)
			}
		}
	}
	for _, stream := range whole.Streams() {
		for k, v := range whole.Records(stream) {
			got, _ := parts.Value(stream, k)
			if math.Abs(got-v) > 1e-9*math.Abs(v) {
				t.Fatalf("stream %s key %s: %v in one export, %v in two", stream, k, v, got)
			}
		}
	}
	if parts.Len() != whole.Len() {
		t.Fatalf("%d records in two exports, %d in one", parts.Len(), whole.Len())
	}
}

// checkConservation: for delta monotonic sums, what is emitted plus what is
// dropped is what came in, for every stream.
func checkConservation(t *testing.T, set *record.Set, st translator.Stats, deltas []float64, streams int) {
	in, scale := 0.0, 0.0
	for _, v := range deltas {
		in += v * float64(streams)
		scale += math.Abs(v) * float64(streams)
	}
	if scale > 1e300 {
		return // sums may overflow; value_out_of_range then carries no value
	}
	out := 0.0
	for _, s := range set.Streams() {
		for _, v := range set.Records(s) {
			out += v
		}
	}
	for _, v := range st.DroppedValue {
		out += v
	}
	if math.Abs(in-out) > 1e-9*scale+1e-300 {
		t.Fatalf("input %v != emitted + dropped %v (stats %+v)", in, out, st)
	}
}

var plainDecimal = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// checkRecords checks every record against CloudZero's rules.
func checkRecords(t *testing.T, set *record.Set, now time.Time) {
	for _, stream := range set.Streams() {
		var keys string
		first := true
		for k, v := range set.Records(stream) {
			// A negative total is an output the delivery core nets with the
			// bucket's other usage; what it sends is positive. Check the
			// record as it would look with the magnitude.
			if v == 0 {
				t.Fatalf("zero record in %s", stream)
			}
			b := record.AppendRecord(nil, k, math.Abs(v))
			if len(b) > record.MaxEncodedBytes {
				t.Fatalf("record of %d bytes", len(b))
			}
			var r struct {
				Timestamp   string              `json:"timestamp"`
				Granularity record.Granularity  `json:"granularity"`
				ElementName string              `json:"element_name"`
				Filter      map[string][]string `json:"filter"`
				Value       string              `json:"value"`
			}
			d := json.NewDecoder(bytes.NewReader(b))
			d.DisallowUnknownFields()
			if err := d.Decode(&r); err != nil {
				t.Fatalf("invalid JSON %s: %v", b, err)
			}
			ts, err := time.Parse(time.RFC3339, r.Timestamp)
			switch {
			case err != nil || !strings.HasSuffix(r.Timestamp, "Z"):
				t.Fatalf("timestamp %q: %v", r.Timestamp, err)
			case !r.Granularity.Valid():
				t.Fatalf("granularity %q", r.Granularity)
			case !r.Granularity.Truncate(ts).Equal(ts):
				t.Fatalf("timestamp %s not at a %s bucket start", r.Timestamp, r.Granularity)
			case ts.After(now.Add(5 * time.Minute)): // max_future_skew: a bucket a clock ahead opened
				t.Fatalf("timestamp %s after now %s plus the skew", r.Timestamp, now)
			case r.ElementName == "":
				t.Fatal("empty element_name")
			case len(r.Filter) > record.MaxFilterKeys:
				t.Fatalf("%d filter keys", len(r.Filter))
			case !plainDecimal.MatchString(r.Value):
				t.Fatalf("value %q is not a plain decimal", r.Value)
			case significantDigits(r.Value) > record.MaxSignificantDigs:
				t.Fatalf("value %q has more than 15 significant digits", r.Value)
			}
			if f, _ := strconv.ParseFloat(r.Value, 64); !(f > 0) {
				t.Fatalf("value %q not positive", r.Value)
			}
			var ks []string
			for k, vs := range r.Filter {
				if len(vs) == 0 || len(vs) > record.MaxValuesPerKey {
					t.Fatalf("filter %q has %d values", k, len(vs))
				}
				ks = append(ks, k)
			}
			slices.Sort(ks)
			if joined := strings.Join(ks, ","); first {
				keys, first = joined, false
			} else if joined != keys {
				t.Fatalf("stream %s mixes filter key sets %q and %q", stream, keys, joined)
			}
		}
	}
}

func significantDigits(s string) int {
	digits := strings.TrimLeft(strings.Replace(s, ".", "", 1), "0")
	return len(strings.TrimRight(digits, "0"))
}
