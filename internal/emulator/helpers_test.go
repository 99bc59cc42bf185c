package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testKey = "test-key-Secret123"
	hour0   = "2026-03-10T12:00:00Z" // start of the clock's current hour
	hourM1  = "2026-03-10T11:00:00Z"
	day0    = "2026-03-10T00:00:00Z"
)

var baseTime = time.Date(2026, 3, 10, 12, 34, 56, 0, time.UTC)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	t      *testing.T
	srv    *Server
	ts     *httptest.Server
	client *http.Client
	clock  *clock
}

// newFixture starts an emulator on 127.0.0.1 with a fixed clock.
func newFixture(t *testing.T, mutate ...func(*Config)) *fixture {
	t.Helper()
	c := &clock{t: baseTime}
	cfg := Config{APIKey: testKey, Now: c.Now}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := New(cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(srv.Close) // runs first: ends injected delays
	client := ts.Client()
	client.Timeout = 10 * time.Second
	return &fixture{t: t, srv: srv, ts: ts, client: client, clock: c}
}

func streamURL(stream, op string) string {
	u := "/unit-cost/v1/telemetry/allocation/" + stream
	if op != "" {
		u += "/" + op
	}
	return u
}

// reply is an API answer.
type reply struct {
	status     int
	retryAfter string
	reason     string
	body       string
}

// do sends a request with the test key and JSON content type unless headers say
// otherwise (a header with an empty value is removed).
func (f *fixture) do(method, path string, body io.Reader, headers map[string]string) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, body)
	require.NoError(f.t, err)
	req.Header.Set("Authorization", testKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := f.client.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b)}
	var e struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(b, &e) == nil {
		r.reason = e.Reason
	}
	return r
}

// post sends body (a string as is, anything else JSON-encoded) to path.
func (f *fixture) post(path string, body any) reply {
	f.t.Helper()
	var b []byte
	if s, ok := body.(string); ok {
		b = []byte(s)
	} else {
		var err error
		b, err = json.Marshal(body)
		require.NoError(f.t, err)
	}
	return f.do(http.MethodPost, path, bytes.NewReader(b), nil)
}

func (f *fixture) ledger() Ledger {
	f.t.Helper()
	resp, err := f.client.Get(f.ts.URL + "/emulator/ledger")
	require.NoError(f.t, err)
	defer resp.Body.Close()
	require.Equal(f.t, http.StatusOK, resp.StatusCode)
	var l Ledger
	require.NoError(f.t, json.NewDecoder(resp.Body).Decode(&l))
	return l
}

func (f *fixture) admin(method, path string, body string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, strings.NewReader(body))
	require.NoError(f.t, err)
	resp, err := f.client.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return resp.StatusCode, string(b)
}

// rec builds a record; filter may be nil.
func rec(ts, granularity, element string, value any, filter map[string][]string) map[string]any {
	r := map[string]any{"timestamp": ts, "granularity": granularity, "element_name": element, "value": value}
	if filter != nil {
		r["filter"] = filter
	}
	return r
}

func body(records ...map[string]any) map[string]any {
	rs := make([]any, len(records))
	for i, r := range records {
		rs[i] = r
	}
	return map[string]any{"records": rs}
}

func env(v ...string) map[string][]string { return map[string][]string{"tag:env": v} }

// entryValues maps "timestamp|element|filter" to the value, for one stream.
func entryValues(t *testing.T, l Ledger, stream string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range l.Streams {
		if s.Name != stream {
			continue
		}
		for _, e := range s.Entries {
			fb, err := json.Marshal(e.Filter)
			require.NoError(t, err)
			out[e.Timestamp+"|"+e.ElementName+"|"+string(fb)] = e.Value
		}
		return out
	}
	return nil
}

func findStream(l Ledger, name string) *StreamLedger {
	for i := range l.Streams {
		if l.Streams[i].Name == name {
			return &l.Streams[i]
		}
	}
	return nil
}

// eventually polls cond every 10 ms for at most d.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", d, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
