package translator_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

func TestTransactions(t *testing.T) {
	cpu := translator.Stream{Name: "cpu", Metrics: []string{"cpu"}, Granularity: record.Hourly, ElementName: "tenant"}
	mem := translator.Stream{Name: "mem", Metrics: []string{"mem"}, Granularity: record.Hourly, ElementName: "tenant"}
	before := t0.Add(-time.Hour)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

	t.Run("rollback keeps the usage for the next point", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu)
		tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: at(0), v: 100}))
		tx := tr.Begin(metrics("cpu", cumSum, pt{start: before, ts: at(1), v: 110}, pt{start: before, ts: at(2), v: 115}))
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "15"}, values(t, tx.Records()))
		tx.Rollback()
		set, _ := tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: at(3), v: 120}))
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "20"}, values(t, set), "100 -> 120, once")
	})

	t.Run("rollback forgets a new series", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu)
		tx := tr.Begin(metrics("cpu", cumSum, pt{start: before, ts: at(0), v: 100}))
		tx.Rollback()
		_, st := tr.Translate(metrics("cpu", cumSum, pt{start: before, ts: at(0), v: 100}))
		assert.Equal(t, 1, st.Baseline, "the same point is a baseline again, not out of order")
		assert.Equal(t, 1, st.Series)
	})

	t.Run("committed changes restore elsewhere", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tr := newTr(t, c, translator.Settings{}, cpu, mem)
		restored := newTr(t, c, translator.Settings{StartTime: c.now}, cpu, mem)
		apply := func(tx *translator.Tx) {
			changes := tx.Changes()
			tx.Commit()
			require.NotNil(t, changes)
			require.NoError(t, restored.RestoreState(changes))
		}
		apply(tr.Begin(metrics("cpu", cumSum, pt{start: before, ts: at(0), v: 100})))
		apply(tr.Begin(metrics("cpu", cumSum, pt{start: before, ts: at(1), v: 130})))
		apply(tr.Begin(metrics("mem", gauge, pt{ts: at(1), v: 2})))
		// A staleness marker ends the gauge series: a tombstone in the changes.
		closing := metrics("mem", gauge, pt{ts: at(2), v: 0})
		closing.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0).SetFlags(1)
		apply(tr.Begin(closing))

		set, st := restored.Translate(metrics("cpu", cumSum, pt{start: before, ts: at(3), v: 137}))
		assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "7"}, values(t, set))
		assert.Equal(t, 1, st.Series, "the closed gauge series was deleted")
	})

	t.Run("a forgotten series that returns is not counted again", func(t *testing.T) {
		c := &clock{t0.Add(2 * time.Hour)}
		tr := newTr(t, c, translator.Settings{SeriesTTL: time.Hour}, cpu)
		started := c.now.Add(-time.Minute) // after the exporter started
		set, _ := tr.Translate(metrics("cpu", cumSum, pt{start: started, ts: c.now, v: 50}))
		assert.Equal(t, "50", values(t, set)["cpu a 2026-01-02T02:00:00Z"], "a new series counts in full")
		c.now = c.now.Add(3 * time.Hour) // quiet for longer than the TTL: forgotten
		set, st := tr.Translate(metrics("cpu", cumSum, pt{start: started, ts: c.now, v: 60}))
		assert.Zero(t, set.Len(), "its first 50 were counted already")
		assert.Equal(t, 1, st.Baseline)
	})

	t.Run("commit twice panics", func(t *testing.T) {
		c := &clock{t0.Add(time.Hour)}
		tx := newTr(t, c, translator.Settings{}, cpu).Begin(metrics("cpu", cumSum))
		tx.Commit()
		assert.Panics(t, func() { tx.Rollback() })
	})
}

// A gauge's start time may change on every export (it is optional for
// gauges): the series is the same and keeps integrating.
func TestGaugeStartTimeIsNotIdentity(t *testing.T) {
	mem := translator.Stream{Name: "mem", Metrics: []string{"mem"}, Granularity: record.Hourly, ElementName: "tenant"}
	c := &clock{t0.Add(time.Hour)}
	tr := newTr(t, c, translator.Settings{}, mem)
	tr.Translate(metrics("mem", gauge, pt{start: t0.Add(-time.Second), ts: t0, v: 2}))
	set, st := tr.Translate(metrics("mem", gauge, pt{start: t0.Add(59 * time.Second), ts: t0.Add(time.Minute), v: 3}))
	assert.Equal(t, map[string]string{"mem a 2026-01-02T00:00:00Z": "120"}, values(t, set), "2 held for 60 s")
	assert.Equal(t, 1, st.Series)
}

// Restoring skips series already past their TTL, so that at MaxSeries they
// cannot take the place of live ones.
func TestRestoreSkipsExpiredSeries(t *testing.T) {
	cpu := translator.Stream{Name: "cpu", Metrics: []string{"cpu"}, Granularity: record.Hourly, ElementName: "tenant"}
	before := t0.Add(-time.Hour)
	c := &clock{t0.Add(time.Hour)}
	saved := func(tenant string, ts time.Time) []byte {
		tr := newTr(t, c, translator.Settings{SeriesTTL: time.Hour}, cpu)
		tr.Translate(metrics("cpu", cumSum, pt{attrs: map[string]any{"tenant": tenant}, start: before, ts: ts, v: 1}))
		state, err := tr.MarshalState()
		require.NoError(t, err)
		return state
	}
	old := saved("old", t0) // seen at 01:00
	c.now = c.now.Add(90 * time.Minute)
	live := saved("live", t0.Add(time.Hour)) // seen at 02:30

	restored := newTr(t, c, translator.Settings{SeriesTTL: time.Hour, MaxSeries: 1}, cpu)
	require.NoError(t, restored.RestoreState(old))
	require.NoError(t, restored.RestoreState(live))
	set, _ := restored.Translate(metrics("cpu", cumSum, pt{attrs: map[string]any{"tenant": "live"}, start: before, ts: t0.Add(time.Hour + time.Minute), v: 5}))
	assert.Equal(t, map[string]string{"cpu live 2026-01-02T01:00:00Z": "4"}, values(t, set), "the live series was restored")
}

// Integer counters past 2^53 (where float64 stops being exact) still give
// exact deltas, also across a saved and restored state.
func TestLargeIntegerCounterDeltasAreExact(t *testing.T) {
	cpu := translator.Stream{Name: "cpu", Metrics: []string{"cpu"}, Granularity: record.Hourly, ElementName: "tenant"}
	before := t0.Add(-time.Hour)
	intPoint := func(ts time.Time, v int64) pmetric.Metrics {
		md := metrics("cpu", cumSum, pt{start: before, ts: ts})
		md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Sum().DataPoints().At(0).SetIntValue(v)
		return md
	}
	const big = int64(1) << 53
	c := &clock{t0.Add(time.Hour)}
	tr := newTr(t, c, translator.Settings{}, cpu)
	tr.Translate(intPoint(t0, big+1))
	set, _ := tr.Translate(intPoint(t0.Add(time.Minute), big+3))
	assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "2"}, values(t, set))

	state, err := tr.MarshalState()
	require.NoError(t, err)
	restored := newTr(t, c, translator.Settings{}, cpu)
	require.NoError(t, restored.RestoreState(state))
	set, _ = restored.Translate(intPoint(t0.Add(2*time.Minute), big+8))
	assert.Equal(t, map[string]string{"cpu a 2026-01-02T00:00:00Z": "5"}, values(t, set))
}
