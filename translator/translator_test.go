package translator_test

import (
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/goleak"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is 2026-01-02T00:00Z; the test clock starts an hour later.
var t0 = time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)

type pt struct {
	attrs     map[string]any
	start, ts time.Time
	v         float64
}

type metricKind int

const (
	gauge metricKind = iota
	deltaSum
	cumSum
	cumUpDown
)

// metrics builds one metric of the given kind from pts.
func metrics(name string, k metricKind, pts ...pt) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(name)
	var dps pmetric.NumberDataPointSlice
	if k == gauge {
		dps = m.SetEmptyGauge().DataPoints()
	} else {
		s := m.SetEmptySum()
		s.SetIsMonotonic(k != cumUpDown)
		s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		if k == deltaSum {
			s.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		}
		dps = s.DataPoints()
	}
	for _, p := range pts {
		dp := dps.AppendEmpty()
		if p.attrs == nil {
			p.attrs = map[string]any{"tenant": "a"}
		}
		_ = dp.Attributes().FromRaw(p.attrs)
		if !p.start.IsZero() {
			dp.SetStartTimestamp(pcommon.NewTimestampFromTime(p.start))
		}
		dp.SetTimestamp(pcommon.NewTimestampFromTime(p.ts))
		dp.SetDoubleValue(p.v)
	}
	return md
}

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newTr(t *testing.T, c *clock, s translator.Settings, streams ...translator.Stream) *translator.Translator {
	t.Helper()
	s.Streams = streams
	if s.StartTime.IsZero() {
		s.StartTime = t0
	}
	s.Now = c.Now
	tr, err := translator.New(s)
	require.NoError(t, err)
	return tr
}

// values maps "stream element timestamp" to the record value.
func values(t *testing.T, set *record.Set) map[string]string {
	t.Helper()
	rs, err := translatortest.Records(set)
	require.NoError(t, err)
	out := map[string]string{}
	for _, r := range rs {
		out[r.Stream+" "+r.ElementName+" "+r.Timestamp] = r.Value
	}
	return out
}

func TestNewValidation(t *testing.T) {
	ok := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "e"}
	for name, tc := range map[string]struct {
		edit func(*translator.Settings)
		want string
	}{
		"valid":           {func(*translator.Settings) {}, ""},
		"duplicate name":  {func(s *translator.Settings) { s.Streams = append(s.Streams, ok) }, "duplicate"},
		"empty name":      {func(s *translator.Settings) { s.Streams[0].Name = "" }, "empty name"},
		"no metrics":      {func(s *translator.Settings) { s.Streams[0].Metrics = nil }, "no metrics"},
		"granularity":     {func(s *translator.Settings) { s.Streams[0].Granularity = "MONTHLY" }, "granularity"},
		"value mode":      {func(s *translator.Settings) { s.Streams[0].Value = "avg" }, "value must be"},
		"no element":      {func(s *translator.Settings) { s.Streams[0].ElementName = "" }, "element_name"},
		"negative ttl":    {func(s *translator.Settings) { s.SeriesTTL = -1 }, "series TTL"},
		"negative series": {func(s *translator.Settings) { s.MaxSeries = -1 }, "max series"},
		"six keys": {func(s *translator.Settings) {
			s.Streams[0].Filter = map[string]string{"a": "a", "b": "b", "c": "c"}
			s.Streams[0].StaticFilter = map[string][]string{"d": {"1"}, "e": {"1"}, "f": {"1"}}
		}, "more than 5 filter keys"},
		"key twice": {func(s *translator.Settings) {
			s.Streams[0].Filter = map[string]string{"tag:x": "x"}
			s.Streams[0].StaticFilter = map[string][]string{"tag:x": {"1"}}
		}, "also in static_filter"},
		"default without filter": {func(s *translator.Settings) {
			s.Streams[0].FilterDefaults = map[string]string{"tag:x": "x"}
		}, "not in filter"},
		"empty default": {func(s *translator.Settings) {
			s.Streams[0].Filter = map[string]string{"tag:x": "x"}
			s.Streams[0].FilterDefaults = map[string]string{"tag:x": ""}
		}, "empty default"},
		"empty static list": {func(s *translator.Settings) {
			s.Streams[0].StaticFilter = map[string][]string{"tag:x": {}}
		}, "empty key, list or value"},
		"21 static values": {func(s *translator.Settings) {
			s.Streams[0].StaticFilter = map[string][]string{"tag:x": strings.Split("a b c d e f g h i j k l m n o p q r s t u", " ")}
		}, "more than 20 values"},
	} {
		t.Run(name, func(t *testing.T) {
			s := translator.Settings{Streams: []translator.Stream{ok}}
			tc.edit(&s)
			_, err := translator.New(s)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestSemantics checks one behaviour per row with a single Translate call.
func TestSemantics(t *testing.T) {
	h := func(name string, m translator.ValueMode, metrics ...string) translator.Stream {
		return translator.Stream{Name: name, Metrics: metrics, Granularity: record.Hourly, ElementName: "tenant", Value: m}
	}
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	long := strings.Repeat("x", record.MaxEncodedBytes)
	for name, tc := range map[string]struct {
		streams []translator.Stream
		md      pmetric.Metrics
		want    map[string]string
		dropped map[translator.DropReason]int
	}{
		"delta sum in count mode counts points": {
			streams: []translator.Stream{h("s", translator.ValueCount, "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: 5}, pt{ts: at(2), v: 0.5}),
			want:    map[string]string{"s a 2026-01-02T00:00:00Z": "2"},
		},
		"integral on a delta monotonic sum is unsupported": {
			streams: []translator.Stream{h("s", translator.ValueIntegral, "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: 5}),
			dropped: map[translator.DropReason]int{translator.DropUnsupportedType: 1},
		},
		"integral on a cumulative counter is unsupported": {
			streams: []translator.Stream{h("s", translator.ValueIntegral, "m")},
			md:      metrics("m", cumSum, pt{ts: at(1), v: 5}),
			dropped: map[translator.DropReason]int{translator.DropUnsupportedType: 1},
		},
		"gauge integral over a gap crosses several hours": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", gauge, pt{ts: at(-90), v: 2}, pt{ts: at(45), v: 1}),
			want: map[string]string{ // 2 x 30 min, 2 x 60 min, 2 x 45 min
				"s a 2026-01-01T22:00:00Z": "3600", "s a 2026-01-01T23:00:00Z": "7200", "s a 2026-01-02T00:00:00Z": "5400"},
		},
		"record too large": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", deltaSum, pt{attrs: map[string]any{"tenant": long}, ts: at(1), v: 1}),
			dropped: map[translator.DropReason]int{translator.DropRecordTooLarge: 1},
		},
		"value too large for a plain decimal": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: 1e70}),
			dropped: map[translator.DropReason]int{translator.DropValueOutOfRange: 1},
		},
		"value too small for a plain decimal": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: 1.0 / 3 * 1e-50}),
			dropped: map[translator.DropReason]int{translator.DropValueOutOfRange: 1},
		},
		"sum overflowing to +Inf": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: math.MaxFloat64}, pt{ts: at(2), v: math.MaxFloat64}),
			dropped: map[translator.DropReason]int{translator.DropValueOutOfRange: 1},
		},
		"infinite value": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", gauge, pt{ts: at(1), v: math.Inf(1)}),
			dropped: map[translator.DropReason]int{translator.DropNonFinite: 1},
		},
		"15 significant digits": {
			streams: []translator.Stream{h("s", "", "m")},
			md:      metrics("m", deltaSum, pt{ts: at(1), v: 0.1}, pt{ts: at(2), v: 0.2}, pt{ts: at(3), v: 123456789.123456789}),
			want:    map[string]string{"s a 2026-01-02T00:00:00Z": "123456789.423457"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			tr := newTr(t, &clock{at(60)}, translator.Settings{}, tc.streams...)
			set, st := tr.Translate(tc.md)
			assert.Equal(t, tc.want, nilIfEmpty(values(t, set)))
			assert.Equal(t, tc.dropped, st.Dropped)
		})
	}
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func TestUnspecifiedTemporality(t *testing.T) {
	md := metrics("m", deltaSum, pt{ts: t0, v: 1})
	md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().SetAggregationTemporality(pmetric.AggregationTemporalityUnspecified)
	dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(t0)) // no value at all
	tr := newTr(t, &clock{t0.Add(time.Hour)}, translator.Settings{},
		translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"})
	_, st := tr.Translate(md)
	assert.Equal(t, map[translator.DropReason]int{translator.DropUnsupportedType: 1, translator.DropNoRecordedValue: 1}, st.Dropped)
}

// TestAcrossCalls checks state kept between Translate calls.
func TestAcrossCalls(t *testing.T) {
	cpu := translator.Stream{Name: "cpu", Metrics: []string{"cpu"}, Granularity: record.Hourly, ElementName: "tenant"}
	mem := translator.Stream{Name: "mem", Metrics: []string{"mem"}, Granularity: record.Hourly, ElementName: "tenant"}
	memSum := translator.Stream{Name: "mem-sum", Metrics: []string{"mem"}, Granularity: record.Hourly, ElementName: "tenant", Value: translator.ValueSum}
	before := t0.Add(-time.Hour) // started before the exporter
	a := map[string]any{"tenant": "a"}
	b := map[string]any{"tenant": "b"}

	t.Run("re-sent batch counts once", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu)
		tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: t0, v: 10}))
		md := metrics("cpu", cumSum, pt{start: before, ts: t0.Add(time.Minute), v: 15}, pt{start: before, ts: t0.Add(2 * time.Minute), v: 18})
		set, _ := tr.Translate(md)
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "8"}, values(t, set))
		set, st := tr.Translate(md)
		assert.Zero(t, set.Len())
		assert.Equal(t, map[translator.DropReason]int{translator.DropOutOfOrder: 2}, st.Dropped)
	})

	t.Run("series limit", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{MaxSeries: 1}, cpu, mem, memSum)
		_, st := tr.Translate(metrics("cpu", cumSum, pt{attrs: a, start: before, ts: t0, v: 1}, pt{attrs: b, start: before, ts: t0, v: 1}))
		assert.Equal(t, map[translator.DropReason]int{translator.DropSeriesLimit: 1}, st.Dropped)
		assert.Equal(t, 1, st.Series)
		set, st := tr.Translate(metrics("cpu", cumSum, pt{attrs: a, start: before, ts: t0.Add(time.Minute), v: 4}))
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "3"}, values(t, set), "existing series continue")
		assert.Nil(t, st.Dropped)
		// A gauge integral needs state; its sum of samples does not.
		set, st = tr.Translate(metrics("mem", gauge, pt{attrs: a, ts: t0.Add(time.Minute), v: 7}))
		assert.Equal(t, map[translator.DropReason]int{translator.DropSeriesLimit: 1}, st.Dropped)
		assert.Equal(t, map[string]string{"mem-sum a 2026-01-02T00:00:00Z": "7"}, values(t, set))
	})

	t.Run("TTL eviction", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{SeriesTTL: 10 * time.Minute}, cpu)
		tr.Translate(metrics("cpu", cumSum, pt{attrs: a, start: before, ts: t0, v: 10}, pt{attrs: b, start: before, ts: t0, v: 10}))
		c.now = c.now.Add(9 * time.Minute)
		_, st := tr.Translate(metrics("cpu", cumSum, pt{attrs: b, start: before, ts: t0.Add(time.Minute), v: 11}))
		assert.Equal(t, 2, st.Series)
		c.now = c.now.Add(2 * time.Minute) // a unseen for 11 minutes, b for 2
		_, st = tr.Translate(pmetric.NewMetrics())
		assert.Equal(t, 1, st.Series, "a swept")
		set, st := tr.Translate(metrics("cpu", cumSum, pt{attrs: a, start: before, ts: t0.Add(2 * time.Minute), v: 50}))
		assert.Zero(t, set.Len(), "a forgotten: its next point is a baseline")
		assert.Equal(t, 1, st.Baseline)
	})

	t.Run("future point leaves the baseline, too old point moves it", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{MaxAge: 30 * time.Minute}, mem)
		tr.Translate(metrics("mem", gauge, pt{ts: t0, v: 1}))                             // baseline, too old
		_, st := tr.Translate(metrics("mem", gauge, pt{ts: t0.Add(2 * time.Hour), v: 5})) // future
		assert.Equal(t, map[translator.DropReason]int{translator.DropFutureTimestamp: 1}, st.Dropped)
		set, st := tr.Translate(metrics("mem", gauge, pt{ts: t0.Add(50 * time.Minute), v: 2}))
		// 1 held from 00:00 to 00:50; the 30 minutes before the cutoff (00:30) are too old.
		assert.Equal(t, map[string]string{"mem a 2026-01-02T00:00:00Z": "1200"}, values(t, set))
		assert.Equal(t, map[translator.DropReason]float64{translator.DropTooOld: 1800}, st.DroppedValue)
	})

	t.Run("state marshal and restore", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu, mem)
		tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: t0, v: 100}))
		tr.Translate(metrics("mem", gauge, pt{ts: t0, v: 3}))
		state, err := tr.MarshalState()
		require.NoError(t, err)
		again, err := tr.MarshalState()
		require.NoError(t, err)
		assert.Equal(t, state, again, "deterministic")

		// A restarted exporter: later start time, so the series would otherwise be a baseline.
		c.now = c.now.Add(time.Minute)
		restarted := newTr(t, c, translator.Settings{StartTime: c.now}, cpu, mem)
		require.NoError(t, restarted.RestoreState(state))
		set, st := restarted.Translate(metrics("cpu", cumSum, pt{start: before, ts: t0.Add(time.Minute), v: 130}))
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "30"}, values(t, set))
		assert.Equal(t, 2, st.Series)
		set, _ = restarted.Translate(metrics("mem", gauge, pt{ts: t0.Add(time.Minute), v: 1}))
		assert.Equal(t, map[string]string{"mem a 2026-01-02T00:00:00Z": "180"}, values(t, set))

		fresh := newTr(t, c, translator.Settings{StartTime: c.now}, cpu)
		set, st = fresh.Translate(metrics("cpu", cumSum, pt{start: before, ts: t0.Add(time.Minute), v: 130}))
		assert.Zero(t, set.Len(), "without the state it is a baseline")
		assert.Equal(t, 1, st.Baseline)

		for _, bad := range [][]byte{nil, []byte("CZTS\x01"), state[:len(state)-1], append([]byte("XXXX"), state[4:]...)} {
			assert.ErrorIs(t, fresh.RestoreState(bad), translator.ErrBadState)
		}
	})

	t.Run("restored state past the TTL is forgotten", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu)
		tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: t0, v: 100}))
		state, err := tr.MarshalState()
		require.NoError(t, err)
		c.now = c.now.Add(2 * time.Hour)
		restarted := newTr(t, c, translator.Settings{}, cpu)
		require.NoError(t, restarted.RestoreState(state))
		_, st := restarted.Translate(pmetric.NewMetrics())
		assert.Zero(t, st.Series)
	})
}

// TestConcurrent runs Translate from several goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(), StartTime: now,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			w := translatortest.NewWorkload(g%2 == 0, now.Add(-time.Hour))
			for i := range 5 {
				w.Advance(now.Add(time.Duration(i*10+g) * time.Second))
				tr.Translate(w.Metrics)
				_, _ = tr.MarshalState()
			}
		})
	}
	wg.Wait()
}

// TestWorkloadUntouched checks with pdatatest that translation leaves its
// input as it was.
func TestWorkloadUntouched(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := translatortest.NewWorkload(true, now.Add(-time.Hour))
	w.Advance(now)
	want := pmetric.NewMetrics()
	w.Metrics.CopyTo(want)
	tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(), StartTime: now, Now: func() time.Time { return now }})
	require.NoError(t, err)
	tr.Translate(w.Metrics)
	require.NoError(t, pmetrictest.CompareMetrics(want, w.Metrics))
}

// TestAllocations guards the hot path: once the keys of a call are known
// (the same customers every export interval), a call allocates only the
// returned Set, not per point or per record.
func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := translatortest.NewWorkload(true, now.Add(-time.Hour))
	tr, err := translator.New(translator.Settings{Streams: translatortest.WorkloadStreams(), StartTime: now,
		Now: func() time.Time { return now }})
	require.NoError(t, err)
	records, runs := 0, 20
	var allocs uint64
	for i := range runs + 2 {
		now = now.Add(10 * time.Second)
		w.Advance(now) // pdata setters allocate: not counted
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		set, _ := tr.Translate(w.Metrics)
		runtime.ReadMemStats(&after)
		if i > 1 { // the first call sets baselines, the second sees new keys
			allocs += after.Mallocs - before.Mallocs
		}
		records = set.Len()
	}
	require.Equal(t, 800, records) // 100 customers × 4 features × 2 streams
	assert.Less(t, allocs/uint64(runs), uint64(100), "allocations per call of 2,000 points")
}
