package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fEnvProd = `{"tag:env":["prod"]}`

func TestSumAddsExactly(t *testing.T) {
	f := newFixture(t)
	p := streamURL("s", "sum")
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", "0.1", env("prod")))).status)
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 0.2, env("prod")))).status)
	// Same key twice in one request: both are added.
	require.Equal(t, 200, f.post(p, body(
		rec(hour0, Hourly, "b", "123456789012345", env("prod")),
		rec(hour0, Hourly, "b", "0.000001", env("prod")),
	)).status)
	require.Equal(t, 200, f.post(p, body(rec(hourM1, Hourly, "a", 1e-7, env("prod")), rec(hourM1, Hourly, "a", "0.0000001", env("prod")))).status)

	l := f.ledger()
	got := entryValues(t, l, "s")
	assert.Equal(t, map[string]string{
		hour0 + "|a|" + fEnvProd:  "0.3",
		hour0 + "|b|" + fEnvProd:  "123456789012345.000001",
		hourM1 + "|a|" + fEnvProd: "0.0000002",
	}, got)
	s := findStream(l, "s")
	require.NotNil(t, s)
	assert.Equal(t, "123456789012345.3000012", s.Total)
	assert.Equal(t, int64(6), s.RecordsApplied)
	assert.Equal(t, int64(6), l.RecordsAccepted)
	assert.Zero(t, l.ValuesOver15Digits, "each value sent has at most 15 significant digits (only the total has more)")
	// Entries are sorted by timestamp then element.
	require.Len(t, s.Entries, 3)
	assert.Equal(t, hourM1, s.Entries[0].Timestamp)
	assert.Equal(t, "a", s.Entries[1].ElementName)
	assert.Equal(t, int64(2), s.Entries[1].Writes)
}

func TestManyDecimalsStayExact(t *testing.T) {
	f := newFixture(t)
	for range 10 {
		require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", "0.1", nil))).status)
	}
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hourM1, Hourly, "a", "0.1234567890123456", nil))).status)
	l := f.ledger()
	assert.Equal(t, "1.1234567890123456", findStream(l, "s").Total)
	assert.Equal(t, map[string]string{hour0 + "|a|{}": "1", hourM1 + "|a|{}": "0.1234567890123456"}, entryValues(t, l, "s"))
	assert.Equal(t, int64(1), l.ValuesOver15Digits)
}

func TestFilterIsCanonical(t *testing.T) {
	f := newFixture(t)
	p := streamURL("s", "sum")
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 1, map[string][]string{"tag:owner": {"sandy", "frank", "frank"}, "custom:feature": {"billing"}}))).status)
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 2, map[string][]string{"custom:feature": {"billing"}, "tag:owner": {"frank", "sandy"}}))).status)
	got := entryValues(t, f.ledger(), "s")
	assert.Equal(t, map[string]string{hour0 + `|a|{"custom:feature":["billing"],"tag:owner":["frank","sandy"]}`: "3"}, got)
}

func TestReplaceOverwrites(t *testing.T) {
	f := newFixture(t)
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 5, env("prod")), rec(hour0, Hourly, "b", 7, env("prod")))).status)
	// Replace overwrites a, inserts c, leaves b; within a request the last one wins.
	r := f.post(streamURL("s", "replace"), body(
		rec(hour0, Hourly, "a", "1.5", env("prod")),
		rec(hour0, Hourly, "c", "4", env("prod")),
		rec(hour0, Hourly, "c", "2", env("prod")),
	))
	require.Equal(t, 200, r.status, r.body)
	// Replace is idempotent per key.
	require.Equal(t, 200, f.post(streamURL("s", "replace"), body(rec(hour0, Hourly, "a", "1.5", env("prod")))).status)
	assert.Equal(t, map[string]string{
		hour0 + "|a|" + fEnvProd: "1.5",
		hour0 + "|b|" + fEnvProd: "7",
		hour0 + "|c|" + fEnvProd: "2",
	}, entryValues(t, f.ledger(), "s"))
}

func TestReplaceCreatesStream(t *testing.T) {
	f := newFixture(t)
	r := f.post(streamURL("new", "replace"), body(rec(hour0, Hourly, "a", 3, nil)))
	require.Equal(t, 200, r.status, r.body)
	assert.Equal(t, "3", findStream(f.ledger(), "new").Total)

	strict := newFixture(t, func(c *Config) { c.ReplaceRequiresStream = true })
	r = strict.post(streamURL("new", "replace"), body(rec(hour0, Hourly, "a", 3, nil)))
	assert.Equal(t, 400, r.status)
	assert.Equal(t, ReasonStreamMustExist, r.reason)
	require.Equal(t, 200, strict.post(streamURL("new", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	require.Equal(t, 200, strict.post(streamURL("new", "replace"), body(rec(hour0, Hourly, "a", 3, nil))).status)
}

func TestDelete(t *testing.T) {
	seed := func(t *testing.T) *fixture {
		f := newFixture(t)
		team := func(team, env string) map[string][]string {
			return map[string][]string{"tag:team": {team}, "tag:env": {env}}
		}
		r := f.post(streamURL("s", "sum"), body(
			rec(hour0, Hourly, "a", 1, team("x", "prod")),
			rec(hour0, Hourly, "a", 2, team("y", "prod")),
			rec(hour0, Hourly, "b", 3, team("x", "dev")),
			rec(hourM1, Hourly, "a", 4, team("x", "prod")),
		))
		require.Equal(t, 200, r.status, r.body)
		return f
	}
	del := func(fields map[string]any) map[string]any {
		r := map[string]any{"timestamp": hour0, "granularity": Hourly}
		for k, v := range fields {
			r[k] = v
		}
		return r
	}
	tests := []struct {
		name      string
		rec       map[string]any
		status    int
		reason    string
		remaining string // stream total after
		deleted   int64
	}{
		{"whole bucket", del(nil), 201, "", "4", 3},
		{"one element", del(map[string]any{"element_name": "a"}), 201, "", "7", 2},
		{"element and filter", del(map[string]any{"element_name": "a", "filter": map[string][]string{"tag:team": {"y"}}}), 201, "", "8", 1},
		{"filter values are a set", del(map[string]any{"filter": map[string][]string{"tag:env": {"prod", "dev"}}}), 201, "", "4", 3},
		{"filter narrows", del(map[string]any{"filter": map[string][]string{"tag:env": {"dev"}}}), 201, "", "7", 1},
		{"nothing matches", del(map[string]any{"element_name": "zzz"}), 201, "", "10", 0},
		{"other bucket", del(map[string]any{"timestamp": hourM1}), 201, "", "6", 1},
		{"value not allowed", del(map[string]any{"value": 1}), 400, ReasonValueNotAllowed, "10", 0},
		{"timestamp required", map[string]any{"granularity": Hourly}, 400, ReasonMissingField, "10", 0},
		{"granularity required", map[string]any{"timestamp": hour0}, 400, ReasonMissingField, "10", 0},
		{"granularity must match the stream", del(map[string]any{"granularity": Daily, "timestamp": day0}), 400, ReasonStreamGranularity, "10", 0},
		{"filter key not in the stream", del(map[string]any{"filter": map[string][]string{"tag:owner": {"x"}}}), 400, ReasonStreamKeySet, "10", 0},
		{"unknown filter key", del(map[string]any{"filter": map[string][]string{"bogus": {"x"}}}), 400, ReasonUnknownFilterKey, "10", 0},
		{"empty element_name", del(map[string]any{"element_name": ""}), 400, ReasonInvalidField, "10", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seed(t)
			r := f.post(streamURL("s", "delete"), body(tt.rec))
			require.Equal(t, tt.status, r.status, r.body)
			assert.Equal(t, tt.reason, r.reason)
			l := f.ledger()
			s := findStream(l, "s")
			assert.Equal(t, tt.remaining, s.Total)
			assert.Equal(t, tt.deleted, s.EntriesDeleted)
			assert.Equal(t, tt.deleted, l.EntriesDeleted)
		})
	}

	t.Run("missing stream", func(t *testing.T) {
		f := newFixture(t)
		r := f.post(streamURL("nope", "delete"), body(map[string]any{"timestamp": hour0, "granularity": Hourly}))
		assert.Equal(t, 400, r.status)
		assert.Equal(t, ReasonStreamMustExist, r.reason)
		assert.Empty(t, f.ledger().Streams, "delete must not create a stream")
	})

	t.Run("sum after delete starts from zero", func(t *testing.T) {
		f := seed(t)
		require.Equal(t, 201, f.post(streamURL("s", "delete"), body(del(nil))).status)
		require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", "0.5", map[string][]string{"tag:team": {"x"}, "tag:env": {"prod"}}))).status)
		assert.Equal(t, "4.5", findStream(f.ledger(), "s").Total)
	})

	t.Run("delete with several records is all-or-nothing", func(t *testing.T) {
		f := seed(t)
		r := f.post(streamURL("s", "delete"), body(del(nil), del(map[string]any{"value": 2})))
		require.Equal(t, 400, r.status)
		assert.Equal(t, "10", findStream(f.ledger(), "s").Total)
	})
}

func TestStreamFixedByFirstWrite(t *testing.T) {
	tests := []struct {
		name   string
		second map[string]any
		reason string
	}{
		{"other granularity", rec(day0, Daily, "a", 1, env("prod")), ReasonStreamGranularity},
		{"other filter key", rec(hour0, Hourly, "a", 1, map[string][]string{"tag:team": {"x"}}), ReasonStreamKeySet},
		{"extra filter key", rec(hour0, Hourly, "a", 1, map[string][]string{"tag:env": {"p"}, "tag:team": {"x"}}), ReasonStreamKeySet},
		{"no filter", rec(hour0, Hourly, "a", 1, nil), ReasonStreamKeySet},
	}
	for _, tt := range tests {
		for _, route := range []string{"sum", "replace", ""} {
			t.Run(tt.name+"/"+route, func(t *testing.T) {
				f := newFixture(t)
				require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, env("prod")))).status)
				r := f.post(streamURL("s", route), body(tt.second))
				require.Equal(t, 400, r.status, r.body)
				assert.Equal(t, tt.reason, r.reason)
				// Another stream is independent.
				require.Equal(t, 200, f.post(streamURL("other", route), body(tt.second)).status)
				assert.Equal(t, "1", findStream(f.ledger(), "s").Total)
			})
		}
	}

	t.Run("within the creating request", func(t *testing.T) {
		f := newFixture(t)
		r := f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil), rec(day0, Daily, "a", 1, nil)))
		require.Equal(t, 400, r.status)
		assert.Equal(t, ReasonStreamGranularity, r.reason)
		assert.Empty(t, f.ledger().Streams)
	})

	t.Run("same keys, other values", func(t *testing.T) {
		f := newFixture(t)
		require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, env("prod")))).status)
		require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, env("dev", "qa")))).status)
		s := findStream(f.ledger(), "s")
		assert.Equal(t, []string{"tag:env"}, s.FilterKeys)
		assert.Equal(t, Hourly, s.Granularity)
		assert.Len(t, s.Entries, 2)
	})
}

func TestDeprecatedRouteIsSum(t *testing.T) {
	f := newFixture(t)
	require.Equal(t, 200, f.post(streamURL("s", ""), body(rec(hour0, Hourly, "a", "0.1", nil))).status)
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", "0.2", nil))).status)
	require.Equal(t, 200, f.post(streamURL("s", ""), body(rec(hour0, Hourly, "a", "0.3", nil))).status)
	l := f.ledger()
	assert.Equal(t, "0.6", findStream(l, "s").Total)
	assert.Equal(t, int64(2), l.RequestsByRoute[RouteDeprecatedSum]["200"])
	assert.Equal(t, int64(2), l.RecordsAcceptedByRoute[RouteDeprecatedSum])
	assert.Equal(t, int64(1), l.RecordsAcceptedByRoute[RouteSum])
}

func TestLegacyRoute(t *testing.T) {
	legacy := func(stream, element string, value any, filter map[string][]string) map[string]any {
		r := map[string]any{"timestamp": hour0, "granularity": Hourly, "element-name": element, "telemetry-stream": stream, "value": value}
		if filter != nil {
			r["filter"] = filter
		}
		return r
	}
	t.Run("streams per record, summed", func(t *testing.T) {
		f := newFixture(t)
		r := f.post("/unit-cost/v1/telemetry", body(
			legacy("s1", "a", "1", env("prod")),
			legacy("s2", "b", "2", env("prod")),
			legacy("s1", "a", "0.5", env("prod")),
		))
		require.Equal(t, 200, r.status, r.body)
		// Then the new route sees the same streams.
		require.Equal(t, 200, f.post(streamURL("s1", "sum"), body(rec(hour0, Hourly, "a", 1, env("prod")))).status)
		l := f.ledger()
		assert.Equal(t, map[string]string{hour0 + "|a|" + fEnvProd: "2.5"}, entryValues(t, l, "s1"))
		assert.Equal(t, map[string]string{hour0 + "|b|" + fEnvProd: "2"}, entryValues(t, l, "s2"))
		assert.Equal(t, int64(3), l.RecordsAcceptedByRoute[RouteLegacy])
	})
	tests := []struct {
		name   string
		rec    map[string]any
		reason string
	}{
		{"missing telemetry-stream", func() map[string]any { r := legacy("s", "a", 1, nil); delete(r, "telemetry-stream"); return r }(), ReasonMissingField},
		{"missing element-name", func() map[string]any { r := legacy("s", "a", 1, nil); delete(r, "element-name"); return r }(), ReasonMissingField},
		{"underscore element_name", func() map[string]any { r := legacy("s", "a", 1, nil); r["element_name"] = "a"; return r }(), ReasonUnknownField},
		{"bad stream name", legacy("no spaces", "a", 1, nil), ReasonStreamName},
		{"unknown filter key", legacy("s", "a", 1, map[string][]string{"feature": {"x"}}), ReasonUnknownFilterKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.post("/unit-cost/v1/telemetry", body(tt.rec))
			require.Equal(t, 400, r.status, r.body)
			assert.Equal(t, tt.reason, r.reason)
		})
	}
	t.Run("stream rules apply across streams of one request", func(t *testing.T) {
		f := newFixture(t)
		require.Equal(t, 200, f.post(streamURL("s1", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
		d := legacy("s1", "a", 1, nil)
		d["granularity"], d["timestamp"] = Daily, day0
		r := f.post("/unit-cost/v1/telemetry", body(legacy("s2", "a", 1, nil), d))
		require.Equal(t, 400, r.status)
		assert.Equal(t, ReasonStreamGranularity, r.reason)
		assert.Nil(t, findStream(f.ledger(), "s2"), "all-or-nothing across streams")
	})
}

func TestTimestampAccounting(t *testing.T) {
	f := newFixture(t)
	posts := []struct {
		stream string
		rec    map[string]any
	}{
		{"h", rec(hour0, Hourly, "a", 1, nil)},                         // aligned, canonical
		{"h", rec("2026-03-10T12:30:00Z", Hourly, "a", 1, nil)},        // unaligned
		{"h", rec("2026-03-10T14:00:00+02:00", Hourly, "a", 1, nil)},   // aligned, non-canonical, = hour0
		{"d", rec(day0, Daily, "a", 1, nil)},                           // aligned
		{"d", rec("2026-03-10T01:00:00Z", Daily, "a", 1, nil)},         // unaligned
		{"d", rec("2026-03-09", Daily, "a", 1, nil)},                   // aligned, non-canonical
		{"m", rec("2026-03-01T00:00:00Z", Monthly, "a", 1, nil)},       // aligned
		{"m", rec("2026-03-02T00:00:00Z", Monthly, "a", 1, nil)},       // unaligned
		{"m", rec("2026-02-01T00:00:00.000Z", Monthly, "a", "1", nil)}, // aligned, non-canonical
	}
	for _, p := range posts {
		r := f.post(streamURL(p.stream, "sum"), body(p.rec))
		require.Equal(t, 200, r.status, r.body)
	}
	l := f.ledger()
	assert.Equal(t, int64(3), l.UnalignedRecords)
	assert.Equal(t, int64(3), l.NonCanonicalTimestamps)
	assert.Equal(t, map[string]string{hour0 + "|a|{}": "2", "2026-03-10T12:30:00Z|a|{}": "1"}, entryValues(t, l, "h"))
	assert.Contains(t, entryValues(t, l, "d"), "2026-03-09T00:00:00Z|a|{}")
}

func TestResetAndAdminEndpoints(t *testing.T) {
	f := newFixture(t)
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	code, _ := f.admin(http.MethodPost, "/emulator/faults", `{"steps":[{"count":3,"status":503}]}`)
	require.Equal(t, 200, code)
	code, _ = f.admin(http.MethodPost, "/emulator/limits", `{"records_per_second":100}`)
	require.Equal(t, 200, code)

	code, _ = f.admin(http.MethodPost, "/emulator/reset", "")
	require.Equal(t, 200, code)
	l := f.ledger()
	assert.Empty(t, l.Streams)
	assert.Empty(t, l.RequestsByStatus)
	assert.Zero(t, l.RecordsAccepted)
	assert.Empty(t, f.srv.Faults().Steps, "reset clears faults")
	assert.Equal(t, 100.0, f.srv.Limits().RecordsPerSecond, "reset keeps limits")
	// The stream can be created again with other properties.
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(day0, Daily, "a", 1, env("x")))).status)

	code, b := f.admin(http.MethodGet, "/emulator/health", "")
	assert.Equal(t, 200, code)
	assert.Contains(t, b, "ok")
	code, _ = f.admin(http.MethodGet, "/emulator/reset", "")
	assert.Equal(t, 405, code)
}

func TestLedgerJSONIsStable(t *testing.T) {
	f := newFixture(t)
	for i := range 20 {
		el := fmt.Sprintf("el-%02d", (i*7)%20)
		require.Equal(t, 200, f.post(streamURL(fmt.Sprintf("s%d", i%3), "sum"),
			body(rec(hour0, Hourly, el, "1.25", env(fmt.Sprint(i%4))), rec(hourM1, Hourly, el, 2, env("z")))).status)
	}
	get := func() string {
		code, b := f.admin(http.MethodGet, "/emulator/ledger", "")
		require.Equal(t, 200, code)
		return b
	}
	first := get()
	for range 5 {
		require.Equal(t, first, get())
	}
	var l Ledger
	require.NoError(t, json.Unmarshal([]byte(first), &l))
	require.Len(t, l.Streams, 3)
	for i, s := range l.Streams {
		assert.Equal(t, fmt.Sprintf("s%d", i), s.Name)
		for j := 1; j < len(s.Entries); j++ {
			a, b := s.Entries[j-1], s.Entries[j]
			assert.True(t, a.Timestamp < b.Timestamp || (a.Timestamp == b.Timestamp && a.ElementName <= b.ElementName), "entries sorted")
		}
	}
	// The documented top-level keys are present even when empty.
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(first), &raw))
	for _, k := range []string{"streams", "requests_by_status", "requests_by_route", "records_accepted", "unaligned_records",
		"ambiguous_applied_requests", "ambiguous_applied_records", "injected_faults", "rejections_by_reason", "recent_errors"} {
		assert.Contains(t, raw, k)
	}
}

func TestConcurrentSums(t *testing.T) {
	f := newFixture(t)
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				b, _ := json.Marshal(body(rec(hour0, Hourly, fmt.Sprintf("w%d", w%2), "0.1", nil)))
				req, err := http.NewRequest(http.MethodPost, f.ts.URL+streamURL("s", "sum"), bytes.NewReader(b))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", testKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := f.client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	l := f.ledger()
	assert.Equal(t, "20", findStream(l, "s").Total)
	assert.Equal(t, map[string]string{hour0 + "|w0|{}": "10", hour0 + "|w1|{}": "10"}, entryValues(t, l, "s"))
	assert.Equal(t, int64(workers*perWorker), l.RequestsByStatus["200"])
}

func TestRequestLogNeverShowsTheKey(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	f := newFixture(t, func(c *Config) { c.Logger = log.New(&lockedWriter{mu: &mu, w: &buf}, "", 0) })
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil), rec(hour0, Hourly, "b", 1, nil))).status)
	b, _ := json.Marshal(body(rec(hour0, Hourly, "a", 1, nil)))
	require.Equal(t, 403, f.do(http.MethodPost, streamURL("s", "sum"), bytes.NewReader(b), map[string]string{"Authorization": "wrong-" + testKey}).status)
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	assert.Contains(t, out, "POST /unit-cost/v1/telemetry/allocation/s/sum -> 200 records=2")
	assert.Contains(t, out, "-> 403 records=0 reason=unauthorized")
	assert.NotContains(t, out, testKey)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestStartAndShutdown(t *testing.T) {
	in, err := Start("127.0.0.1:0", Config{APIKey: testKey})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(in.URL, "http://127.0.0.1:"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	ts := time.Now().UTC().Truncate(time.Hour).Format(time.RFC3339)
	b, _ := json.Marshal(body(rec(ts, Hourly, "a", 1, nil)))
	req, _ := http.NewRequest(http.MethodPost, in.URL+streamURL("s", "sum"), bytes.NewReader(b))
	req.Header.Set("Authorization", testKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "1", findStream(in.Ledger(), "s").Total)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, in.Shutdown(ctx))
	require.NoError(t, in.Shutdown(ctx), "a second Shutdown is harmless")
	_, err = client.Get(in.URL + "/emulator/health")
	assert.Error(t, err)
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(Config{})
	assert.Error(t, err)
	_, err = New(Config{APIKey: "k", Faults: FaultConfig{Steps: []FaultStep{{Count: 0}}}})
	assert.Error(t, err)
	_, err = New(Config{APIKey: "k", Limits: Limits{RecordsPerSecond: -1}})
	assert.Error(t, err)
}
