package translator_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// Exactness at the edges (issue "Translator: exactness at the edges"), one
// test per item; each failed before its fix.

// Item 1: a cumulative series stamped by a clock running ahead, counted in
// full at its first point, then forgotten after series.ttl, must not be
// counted in full again at its next point: its start is older than a TTL
// (plus the skew the clock may have) so it may have been tracked before.
func TestForgottenSeriesIsNotCountedInFullAgain(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"}
	at := func(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	c := &clock{at(1, 0)}
	tr := newTr(t, c, translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute}, h)
	// Started 01:04 by the producer's clock, 4 minutes ahead of ours.
	set, _ := tr.Translate(metrics("m", cumSum, pt{start: at(1, 4), ts: at(1, 5), v: 100}))
	assert.Equal(t, map[string]string{"s a 2026-01-02T01:00:00Z": "100"}, values(t, set), "a series started after the exporter counts in full")

	c.now = at(2, 1) // quiet for just over the TTL: forgotten
	set, st := tr.Translate(metrics("m", cumSum, pt{start: at(1, 4), ts: at(2, 5), v: 150}))
	assert.Empty(t, values(t, set), "the usage since the forgotten series' last point is unknown; 150 in full would count 100 twice")
	assert.Equal(t, 1, st.Baseline)
}

// Item 2: any finite value CloudZero can store is kept, rounded to 15
// significant digits; only values whose plain decimal would exceed
// record.MaxValueChars are out of range.
func TestSmallAndLargeValues(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"}
	c := &clock{t0.Add(time.Hour)}
	for _, tc := range []struct {
		v       float64
		want    string
		dropped bool
	}{
		{3.33333333333333e-9, "0.00000000333333333333333", false},
		{1.0 / 3 * 1e-20, "0.00000000000000000000333333333333333", false},
		{1.234e-40, "0.0000000000000000000000000000000000000001234", false},
		{5e20, "500000000000000000000", false},
		{1.5e63, "1500000000000000000000000000000000000000000000000000000000000000", false},
		{1e64, "", true},
		{1.0 / 3 * 1e-48, "", true},
	} {
		tr := newTr(t, c, translator.Settings{}, h)
		set, st := tr.Translate(metrics("m", deltaSum, pt{ts: t0.Add(30 * time.Minute), v: tc.v}))
		if tc.dropped {
			assert.Empty(t, values(t, set), "%v", tc.v)
			assert.Equal(t, 1, st.Dropped[translator.DropValueOutOfRange], "%v", tc.v)
			continue
		}
		assert.Equal(t, map[string]string{"s a 2026-01-02T00:00:00Z": tc.want}, values(t, set), "%v", tc.v)
	}
}

// histogram builds one cumulative (or delta) histogram point per sum.
func histogram(temporality pmetric.AggregationTemporality, start time.Time, ts []time.Time, counts []uint64, sums []float64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("h")
	hg := m.SetEmptyHistogram()
	hg.SetAggregationTemporality(temporality)
	for i := range ts {
		dp := hg.DataPoints().AppendEmpty()
		dp.Attributes().PutStr("tenant", "a")
		dp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(ts[i]))
		dp.SetCount(counts[i])
		dp.SetSum(sums[i])
	}
	return md
}

// Item 4: a histogram point whose sum is NaN or ±Inf still counts for a
// count stream; a sum stream drops only that point's contribution, and a
// cumulative series recovers at its next finite sum.
func TestNonFiniteHistogramSum(t *testing.T) {
	count := translator.Stream{Name: "count", Metrics: []string{"h"}, Granularity: record.Hourly, ElementName: "tenant", Value: translator.ValueCount}
	sum := translator.Stream{Name: "sum", Metrics: []string{"h"}, Granularity: record.Hourly, ElementName: "tenant", Value: translator.ValueSum}
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	c := &clock{t0.Add(time.Hour)}

	t.Run("delta", func(t *testing.T) {
		tr := newTr(t, c, translator.Settings{}, count, sum)
		set, st := tr.Translate(histogram(pmetric.AggregationTemporalityDelta, at(0),
			[]time.Time{at(1), at(2), at(3)}, []uint64{2, 3, 4}, []float64{10, math.NaN(), 30}))
		assert.Equal(t, map[string]string{"count a 2026-01-02T00:00:00Z": "9", "sum a 2026-01-02T00:00:00Z": "40"}, values(t, set))
		assert.Equal(t, 1, st.Dropped[translator.DropNonFinite], "only the sum stream's part of the NaN point")
	})
	t.Run("cumulative", func(t *testing.T) {
		tr := newTr(t, c, translator.Settings{}, count, sum)
		start := t0.Add(-time.Hour) // before the exporter: the first point is a baseline
		var got []map[string]string
		for i, p := range []struct {
			count uint64
			sum   float64
		}{{10, 100}, {12, math.Inf(1)}, {15, 130}, {20, 180}} {
			set, _ := tr.Translate(histogram(pmetric.AggregationTemporalityCumulative, start, []time.Time{at(i + 1)}, []uint64{p.count}, []float64{p.sum}))
			got = append(got, values(t, set))
		}
		assert.Equal(t, []map[string]string{
			{},                                    // baseline
			{"count a 2026-01-02T00:00:00Z": "2"}, // the count goes on; the infinite sum counts nothing
			{"count a 2026-01-02T00:00:00Z": "3"}, // the sum's baseline again, at the first finite sum
			{"count a 2026-01-02T00:00:00Z": "5", "sum a 2026-01-02T00:00:00Z": "50"},
		}, got)
	})
}

// Item 6: a delta point just after an hour boundary, from a clock running
// ahead (within max_future_skew), is kept in its own bucket instead of
// being dropped; the delivery core sends that bucket only once it opened.
func TestPointJustAfterTheHourFromAClockAhead(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"}
	c := &clock{t0.Add(59*time.Minute + 30*time.Second)} // 00:59:30 here
	tr := newTr(t, c, translator.Settings{MaxFutureSkew: 5 * time.Minute}, h)
	set, st := tr.Translate(metrics("m", deltaSum,
		pt{ts: t0.Add(59 * time.Minute), v: 1},                           // 00:59
		pt{ts: t0.Add(time.Hour + 10*time.Second), v: 2},                 // 01:00:10, the producer's clock is ahead
		pt{ts: t0.Add(time.Hour + 4*time.Minute + 29*time.Second), v: 4}, // 01:04:29: within the skew
		pt{ts: t0.Add(time.Hour + 5*time.Minute + 31*time.Second), v: 8}, // 01:05:31: beyond it
	))
	assert.Equal(t, map[string]string{"s a 2026-01-02T00:00:00Z": "1", "s a 2026-01-02T01:00:00Z": "6"}, values(t, set))
	assert.Equal(t, map[translator.DropReason]int{translator.DropFutureTimestamp: 1}, st.Dropped)
}

// The Go SDK stamps every series of a cumulative instrument with the
// instrument's start. A customer first seen more than a TTL after that start
// counts in full when no series was forgotten since (nothing tracked can
// have been lost), and is a baseline once one was: it may be that forgotten
// series.
func TestLateSeriesOfAnOldInstrument(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"}
	at := func(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	a := map[string]any{"tenant": "a"}
	late := map[string]any{"tenant": "late"}
	for _, tc := range []struct {
		name   string
		before func(tr *translator.Translator, c *clock) // from 01:10, before the late customer's first point
		want   map[string]string
	}{
		{name: "nothing forgotten: counts in full",
			before: func(tr *translator.Translator, c *clock) {
				tr.Translate(metrics("m", cumSum, pt{attrs: a, start: at(0, 1), ts: at(1, 10), v: 1}))
				for i, m := range []int{120, 170} { // a stays tracked
					c.now = at(0, m)
					tr.Translate(metrics("m", cumSum, pt{attrs: a, start: at(0, 1), ts: c.now, v: float64(2 + i)}))
				}
			},
			want: map[string]string{"s late 2026-01-02T03:00:00Z": "7"}},
		{name: "a series swept after the start: baseline",
			before: func(tr *translator.Translator, c *clock) {
				tr.Translate(metrics("m", cumSum, pt{attrs: a, start: at(0, 1), ts: at(0, 30), v: 1}))
				c.now = at(2, 0)
				tr.Translate(pmetric.NewMetrics()) // a, quiet for 90 minutes, is swept
			},
			want: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{at(0, 0)}
			tr := newTr(t, c, translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute}, h)
			c.now = at(1, 10)
			tc.before(tr, c)
			c.now = at(3, 5)
			set, _ := tr.Translate(metrics("m", cumSum, pt{attrs: late, start: at(0, 1), ts: at(3, 5), v: 7}))
			got := values(t, set)
			delete(got, "s a 2026-01-02T03:00:00Z")
			assert.Equal(t, tc.want, got)
		})
	}
}
