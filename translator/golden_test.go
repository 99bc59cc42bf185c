package translator_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
	"github.com/cloudzero-otel/cloudzeroexporter/translator"
	"github.com/cloudzero-otel/cloudzeroexporter/translator/translatortest"
)

// -update rewrites the expected files. Every expected file in testdata was
// computed by hand first (see the comments in each input.yaml); review any
// change to them the same way.
var update = flag.Bool("update", false, "rewrite testdata/*/expected.json and stats.json")

var (
	// goldenNow is the clock of every golden case: just before an hour
	// boundary, so that a point within the skew can fall in a future bucket.
	goldenNow   = time.Date(2026, 1, 2, 1, 58, 0, 0, time.UTC)
	goldenStart = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC) // exporter start
)

func hourly(name, element string, metrics ...string) translator.Stream {
	return translator.Stream{Name: name, Metrics: metrics, Granularity: record.Hourly, ElementName: element}
}

func with(s translator.Stream, f func(*translator.Stream)) translator.Stream {
	f(&s)
	return s
}

func daily(s translator.Stream) translator.Stream {
	s.Granularity = record.Daily
	return s
}

func mode(s translator.Stream, m translator.ValueMode) translator.Stream {
	s.Value = m
	return s
}

var goldenCases = map[string][]translator.Stream{
	"delta_sum": {
		with(hourly("req-hourly", "customer.id", "requests"), func(s *translator.Stream) {
			s.Filter = map[string]string{"custom:feature": "feature"}
		}),
		with(daily(hourly("req-daily", "customer.id", "requests")), func(s *translator.Stream) {
			s.Filter = map[string]string{"custom:feature": "feature"}
			s.StaticFilter = map[string][]string{"tag:owner": {"sandy", "frank"}}
		}),
	},
	"cumulative_sum": {hourly("cpu", "tenant", "cpu.seconds")},
	"gauge_integral": {
		hourly("mem-hourly", "tenant", "memory"),
		daily(hourly("mem-daily", "tenant", "memory")),
		mode(hourly("mem-samples", "tenant", "memory"), translator.ValueSum),
		mode(hourly("mem-points", "tenant", "memory"), translator.ValueCount),
	},
	"updown": {
		hourly("conn", "tenant", "connections"),
		hourly("queue-auto", "tenant", "queue.delta"),
		mode(hourly("queue-net", "tenant", "queue.delta"), translator.ValueSum),
	},
	"histogram": {
		hourly("lat-count", "tenant", "latency.delta", "latency.cumulative", "latency.exp", "rpc.summary"),
		mode(hourly("lat-sum", "tenant", "latency.delta", "latency.cumulative", "latency.exp", "rpc.summary"), translator.ValueSum),
		mode(hourly("lat-integral", "tenant", "latency.delta"), translator.ValueIntegral),
	},
	"attributes": {
		with(daily(hourly("usage", "customer.id", "usage")), func(s *translator.Stream) {
			s.Filter = map[string]string{"custom:feature": "feature", "tag:environment": "deployment.environment", "custom:tier": "tier"}
			s.FilterDefaults = map[string]string{"tag:environment": "unknown"}
			s.StaticFilter = map[string][]string{"tag:owner": {"frank", "sandy"}}
		}),
		with(hourly("usage-by-region", "cloud.region", "usage"), func(s *translator.Stream) {
			s.Filter = map[string]string{"custom:customer": "customer.id"}
		}),
	},
	"time_limits": {
		hourly("t-hourly", "tenant", "events"),
		daily(hourly("t-daily", "tenant", "events")),
		hourly("ticks", "tenant", "ticks"),
	},
}

// goldenStats is Stats as stored in stats.json.
type goldenStats struct {
	Points       int                               `json:"points"`
	Ignored      int                               `json:"ignored"`
	Baseline     int                               `json:"baseline"`
	Dropped      map[translator.DropReason]int     `json:"dropped,omitempty"`
	DroppedValue map[translator.DropReason]float64 `json:"dropped_value,omitempty"`
	Series       int                               `json:"series"`
}

func TestGolden(t *testing.T) {
	for name, streams := range goldenCases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			md, err := golden.ReadMetrics(filepath.Join(dir, "input.yaml"))
			require.NoError(t, err)
			// Byte comparison, not pmetrictest: inputs hold NaN, which never
			// compares equal.
			before, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
			require.NoError(t, err)

			// The cases replay hours of points at one fixed clock: a TTL of
			// a day keeps series that started hours before it "recent".
			tr, err := translator.New(translator.Settings{Streams: streams, StartTime: goldenStart,
				SeriesTTL: 24 * time.Hour, Now: func() time.Time { return goldenNow }})
			require.NoError(t, err)
			set, st := tr.Translate(md)

			after, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
			require.NoError(t, err)
			require.Equal(t, before, after, "Translate must not modify its input")
			got, err := translatortest.RecordsJSON(set)
			require.NoError(t, err)
			gotStats, err := json.MarshalIndent(goldenStats{st.Points, st.Ignored, st.Baseline, st.Dropped, st.DroppedValue, st.Series}, "", "  ")
			require.NoError(t, err)
			gotStats = append(gotStats, '\n')
			checkGolden(t, filepath.Join(dir, "expected.json"), got)
			checkGolden(t, filepath.Join(dir, "stats.json"), gotStats)
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got), path)
}
