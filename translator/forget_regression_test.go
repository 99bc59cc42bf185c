package translator_test

// Regression tests from a second hostile review: a series counted, forgotten
// and back with the same start must not count in full again. Their comments
// describe the bug as it was.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
)

// TestForgottenSeriesCountsTwiceAfterRestart: lastForget lives only
// in memory. It is not in MarshalState, not in Tx.Changes (the journal), and
// RestoreState/RestoreStateAt neither restore it nor set it when they apply
// a tombstone or leave out a series past its TTL. After a restart that
// restores the exporter's first start (exporter/persist.go: SetStartTime
// from the recStart record / snapshot head, then RestoreStateAt of the
// snapshot and of each consume record's changes), lastForget is 0, so
// countsFromStart's second bound `start > t.lastForget+t.skew` is true for
// every series that started after the first start: a series that was
// tracked, counted, swept (tombstone in the journal) and comes back with the
// same start time counts its whole cumulative value again.
//
// Expected: the returning series only sets a baseline (0 more usage; the
// same translator without the restart does exactly that). Actual: its full
// cumulative value (6) is counted again: 5 units billed twice.
func TestForgottenSeriesCountsTwiceAfterRestart(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m"}, Granularity: record.Hourly, ElementName: "tenant"}
	at := func(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	set := translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute}
	a := map[string]any{"tenant": "a"}
	start := at(0, 30) // after the exporter's first start (t0)

	for _, how := range []string{"journal (tombstone)", "snapshot", "RestoreState leaves out an expired series"} {
		t.Run(how, func(t *testing.T) {
			c := &clock{at(1, 0)}
			tr := newTr(t, c, set, h)
			var journal [][]byte
			var asOf []time.Time
			step := func(md pmetric.Metrics) *record.Set {
				tx := tr.Begin(md)
				if ch := tx.Changes(); ch != nil {
					journal, asOf = append(journal, ch), append(asOf, c.now)
				}
				rs := tx.Records()
				tx.Commit()
				return rs
			}
			first := step(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(1, 0), v: 5}))
			require.Equal(t, map[string]string{"s a 2026-01-02T01:00:00Z": "5"}, values(t, first)) // counted in full, once

			if how == "RestoreState leaves out an expired series" {
				// The state as written at 01:00, restored by a process at
				// 02:30 without ShiftSeen: the series is past its TTL and
				// left out, i.e. forgotten, but lastForget is not moved.
				state, err := tr.MarshalState()
				require.NoError(t, err)
				c2 := &clock{at(2, 30)}
				tr2 := newTr(t, c2, translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute, StartTime: t0}, h)
				require.NoError(t, tr2.RestoreState(state))
				got, _ := tr2.Translate(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(2, 30), v: 6}))
				assert.Equal(t, map[string]string{}, values(t, got), "5 units already counted are counted again")
				return
			}

			c.now = at(2, 30)
			step(pmetric.NewMetrics()) // a, quiet for 90 minutes, is swept: tombstone in the changes

			// Control: the same process, no restart: a baseline.
			ctl, _ := tr.Translate(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(2, 40), v: 6}))
			require.Equal(t, map[string]string{}, values(t, ctl))

			// Restart, restoring as exporter/persist.go does.
			c2 := &clock{at(2, 31)}
			tr2 := newTr(t, c2, translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute, StartTime: at(2, 31)}, h)
			tr2.SetStartTime(t0) // the first start, from storage
			if how == "snapshot" {
				// tr's state after the sweep (MarshalState before the control point): empty.
				snapTr := newTr(t, &clock{at(1, 0)}, set, h)
				for i, ch := range journal {
					require.NoError(t, snapTr.RestoreStateAt(ch, asOf[i]))
				}
				snap, err := snapTr.MarshalState()
				require.NoError(t, err)
				require.NoError(t, tr2.RestoreStateAt(snap, at(2, 30)))
			} else {
				for i, ch := range journal {
					require.NoError(t, tr2.RestoreStateAt(ch, asOf[i]))
				}
			}
			got, _ := tr2.Translate(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(2, 31), v: 6}))
			assert.Equal(t, map[string]string{}, values(t, got), "5 units already counted are counted again")
		})
	}
}

// TestClockStepBackLowersLastForget: every forget assigns
// t.lastForget = c.now (process.go advance: `if expired || closing {
// t.lastForget = c.now }`, the series_limit case, series.go sweep), so a
// host clock that steps back moves lastForget back, below the start of a
// series already forgotten. When the clock is corrected, that series comes
// back and countsFromStart's second bound holds again.
//
// S (start 00:30) is counted (5) and swept at 02:30. The clock steps back
// to 00:00 and a gauge staleness marker of an unrelated series arrives
// (any forget would do): lastForget = 00:00. The clock is corrected to
// 02:40 and S returns with the same start, at 6. Expected: a baseline, as
// without the clock step (and as before this change: the first bound alone
// is false, 00:30 < 02:40-1h+5m). Actual: 6 counted in full; 5 billed twice.
// lastForget should never decrease (max(t.lastForget, now)).
func TestClockStepBackLowersLastForget(t *testing.T) {
	h := translator.Stream{Name: "s", Metrics: []string{"m", "g"}, Granularity: record.Hourly, ElementName: "tenant"}
	at := func(h, m int) time.Time { return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	a := map[string]any{"tenant": "a"}
	start := at(0, 30)
	for _, step := range []bool{false, true} {
		c := &clock{at(1, 0)}
		tr := newTr(t, c, translator.Settings{SeriesTTL: time.Hour, MaxFutureSkew: 5 * time.Minute}, h)
		first, _ := tr.Translate(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(1, 0), v: 5}))
		require.Equal(t, map[string]string{"s a 2026-01-02T01:00:00Z": "5"}, values(t, first))
		c.now = at(2, 30)
		tr.Translate(pmetric.NewMetrics()) // S swept
		if step {
			c.now = at(0, 0) // the host clock steps back
			md := metrics("g", gauge, pt{attrs: map[string]any{"tenant": "other"}, ts: at(0, 0), v: 1})
			dp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0)
			dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true)) // a staleness marker: a forget
			tr.Translate(md)
		}
		c.now = at(2, 40) // corrected
		got, _ := tr.Translate(metrics("m", cumSum, pt{attrs: a, start: start, ts: at(2, 40), v: 6}))
		assert.Equal(t, map[string]string{}, values(t, got), "clock stepped back: %v; S's 5 units counted again", step)
	}
}
