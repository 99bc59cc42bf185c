package exporter

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// captured is one request as the server saw it.
type captured struct {
	method, uri, auth, ctype, body string
}

func captureServer(t *testing.T, status int) (*httptest.Server, <-chan captured) {
	ch := make(chan captured, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- captured{r.Method, r.RequestURI, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"ignored": true}`)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func TestClientRequests(t *testing.T) {
	ts := time.Date(2025, 1, 25, 13, 0, 0, 0, time.FixedZone("X", 3600))
	filter := func() []record.Dimension {
		return []record.Dimension{
			{Key: "tag:owner", Values: []string{"sandy", "frank"}},
			{Key: "custom:feature", Values: []string{"billing"}},
		}
	}
	recs := []record.Record{
		{Timestamp: ts, Granularity: record.Hourly, ElementName: `cust "1"`, Filter: filter(), Value: 250000000},
		{Timestamp: ts, Granularity: record.Daily, ElementName: "c2", Value: 0.5},
	}
	const recJSON = `{"records":[` +
		`{"timestamp":"2025-01-25T12:00:00Z","granularity":"HOURLY","element_name":"cust \"1\"","filter":{"custom:feature":["billing"],"tag:owner":["frank","sandy"]},"value":"250000000"},` +
		`{"timestamp":"2025-01-25T12:00:00Z","granularity":"DAILY","element_name":"c2","value":"0.5"}]}`
	tests := []struct {
		name, path, want string
		status           int
		call             func(c *Client) error
	}{
		{"sum", "/unit-cost/v1/telemetry/allocation/my-stream/sum", recJSON, 200,
			func(c *Client) error { return c.Sum(context.Background(), "my-stream", recs) }},
		{"replace", "/unit-cost/v1/telemetry/allocation/my-stream/replace", recJSON, 200,
			func(c *Client) error { return c.Replace(context.Background(), "my-stream", recs) }},
		{"delete", "/unit-cost/v1/telemetry/allocation/my-stream/delete",
			`{"records":[{"timestamp":"2025-01-25T12:00:00Z","granularity":"HOURLY"},` +
				`{"timestamp":"2025-01-25T12:00:00Z","granularity":"DAILY","element_name":"c2","filter":{"custom:feature":["billing"],"tag:owner":["frank","sandy"]}}]}`,
			201,
			func(c *Client) error {
				return c.Delete(context.Background(), "my-stream", []DeleteSelector{
					{Timestamp: ts, Granularity: record.Hourly},
					{Timestamp: ts, Granularity: record.Daily, ElementName: "c2", Filter: filter()},
				})
			}},
		{"post with escaped stream", "/unit-cost/v1/telemetry/allocation/a%2Fb%20c%3F/sum", `{"records":[]}`, 204,
			func(c *Client) error { return c.Post(context.Background(), OpSum, "a/b c?", []byte(`{"records":[]}`)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, ch := captureServer(t, tc.status)
			for _, endpoint := range []string{srv.URL, srv.URL + "/"} {
				if err := tc.call(NewClient(srv.Client(), endpoint, testKey)); err != nil {
					t.Fatal(err)
				}
				got := <-ch
				want := captured{"POST", tc.path, testKey, "application/json", tc.want}
				if got != want {
					t.Fatalf("request\n got %+v\nwant %+v", got, want)
				}
			}
		})
	}
	if recs[0].Filter[0].Key != "tag:owner" || recs[0].Filter[0].Values[0] != "sandy" {
		t.Fatal("Sum modified the caller's records")
	}
}

func TestClientEndpointWithPathPrefix(t *testing.T) {
	srv, ch := captureServer(t, 200)
	c := NewClient(srv.Client(), srv.URL+"/proxy//", testKey)
	if err := c.Post(context.Background(), OpReplace, "s", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := (<-ch).uri; got != "/proxy/unit-cost/v1/telemetry/allocation/s/replace" {
		t.Fatal(got)
	}
}

func TestClientInvalidInput(t *testing.T) {
	srv, ch := captureServer(t, 200)
	c := NewClient(srv.Client(), srv.URL, testKey)
	ctx := context.Background()
	ts := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(v float64) []record.Record {
		return []record.Record{{Timestamp: ts, Granularity: record.Daily, ElementName: "e", Value: v}}
	}
	for name, err := range map[string]error{
		"zero value":      c.Sum(ctx, "s", rec(0)),
		"negative value":  c.Replace(ctx, "s", rec(-1)),
		"empty element":   c.Sum(ctx, "s", []record.Record{{Timestamp: ts, Granularity: record.Daily, Value: 1}}),
		"empty stream":    c.Sum(ctx, "", rec(1)),
		"dot stream":      c.Post(ctx, OpSum, "..", nil),
		"bad granularity": c.Delete(ctx, "s", []DeleteSelector{{Timestamp: ts, Granularity: "WEEKLY"}}),
		"no timestamp":    c.Delete(ctx, "s", []DeleteSelector{{Granularity: record.Daily}}),
		"bad endpoint":    NewClient(nil, "http://[::1"+testKey, testKey).Post(ctx, OpSum, "s", nil),
	} {
		if !errors.Is(err, ErrInvalid) || !IsPermanent(err) {
			t.Errorf("%s: got %v, want permanent ErrInvalid", name, err)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error holds the API key: %v", name, err)
		}
	}
	if err := c.Sum(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Fatalf("unexpected request %+v", r)
	default:
	}
}

func TestClientStatus(t *testing.T) {
	tests := []struct {
		status               int
		retryAfter           string
		ok, permanent, large bool
		wantDelay            time.Duration
	}{
		{status: 200, ok: true},
		{status: 201, ok: true},
		{status: 204, ok: true},
		{status: 400, permanent: true},
		{status: 401, permanent: true},
		{status: 403, permanent: true},
		{status: 404, permanent: true},
		{status: 409, permanent: true},
		{status: 422, permanent: true},
		{status: 408},
		{status: 413, large: true},
		{status: 429},
		{status: 429, retryAfter: "2", wantDelay: 2 * time.Second},
		{status: 503},
		{status: 503, retryAfter: "Sun, 06 Nov 1994 08:49:37 GMT", wantDelay: 30 * time.Second},
		{status: 500},
		{status: 502},
		{status: 504},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status)+tc.retryAfter, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, strings.Repeat("reason ", 200))
			}))
			defer srv.Close()
			c := NewClient(srv.Client(), srv.URL, testKey)
			c.now = func() time.Time { return time.Date(1994, 11, 6, 8, 49, 7, 0, time.UTC) }
			err := c.Post(context.Background(), OpSum, "s", []byte(`{"records":[]}`))
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.status {
				t.Fatalf("got %v, want *StatusError %d", err, tc.status)
			}
			if IsPermanent(err) != tc.permanent || mayHaveApplied(err) != (tc.status >= 500) || errors.Is(err, ErrTooLarge) != tc.large {
				t.Fatalf("%v: permanent=%v may have applied=%v large=%v", err, IsPermanent(err), mayHaveApplied(err), errors.Is(err, ErrTooLarge))
			}
			if se.RetryAfter != tc.wantDelay || RetryAfter(err) != tc.wantDelay {
				t.Fatalf("RetryAfter %v, want %v", se.RetryAfter, tc.wantDelay)
			}
			if len(se.Body) > maxErrorBody+3 || !strings.HasPrefix(se.Body, "reason reason") {
				t.Fatalf("body %d bytes: %q", len(se.Body), se.Body)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                               0,
		"2":                              2 * time.Second,
		" 120 ":                          2 * time.Minute,
		"0":                              0,
		"-5":                             0,
		"999999999999":                   time.Hour,
		"1.5":                            0,
		"soon":                           0,
		"Sun, 01 Jun 2025 12:00:30 GMT":  30 * time.Second,
		"Sunday, 01-Jun-25 12:01:00 GMT": time.Minute,
		"Sun Jun  1 12:00:10 2025":       10 * time.Second,
		"Sun, 01 Jun 2025 11:00:00 GMT":  0,
		"Mon, 02 Jun 2025 12:00:00 GMT":  time.Hour,
	} {
		if got := parseRetryAfter(h, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestClientTransportErrors(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		err := NewClient(&http.Client{Timeout: 5 * time.Second}, url, testKey).Post(context.Background(), OpSum, "s", nil)
		var te *TransportError
		if !errors.As(err, &te) || IsPermanent(err) || !mayHaveApplied(err) || te.Timeout() {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(err.Error(), url) {
			t.Fatalf("error repeats the URL: %v", err)
		}
	})
	t.Run("timeout and cancel", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}))
		defer srv.Close()
		defer close(release)
		hc := srv.Client()
		hc.Timeout = 50 * time.Millisecond
		err := NewClient(hc, srv.URL, testKey).Post(context.Background(), OpSum, "s", nil)
		var te *TransportError
		if !errors.As(err, &te) || !te.Timeout() || IsPermanent(err) {
			t.Fatalf("got %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		err = NewClient(srv.Client(), srv.URL, testKey).Post(ctx, OpSum, "s", nil)
		if !errors.Is(err, context.Canceled) || !errors.As(err, &te) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestAPIKeyNotInErrors(t *testing.T) {
	// The server echoes the key, at several offsets around the 512-byte cut.
	for _, pad := range []int{0, 500, 505, 511, 512, 600} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			_, _ = io.WriteString(w, strings.Repeat("x", pad)+"bad key "+r.Header.Get("Authorization")+" end")
		}))
		err := NewClient(srv.Client(), srv.URL, testKey).Post(context.Background(), OpSum, "s", nil)
		srv.Close()
		if err == nil || strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), testKey[:12]) {
			t.Fatalf("pad %d: %v", pad, err)
		}
		if pad == 0 && !strings.Contains(err.Error(), "bad key "+redacted) {
			t.Fatalf("not redacted as expected: %v", err)
		}
	}
	// A key pasted into the endpoint by mistake does not leak through
	// transport errors either.
	err := NewClient(&http.Client{Timeout: time.Second}, "http://127.0.0.1:1/"+testKey, testKey).Post(context.Background(), OpSum, "s", nil)
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Fatalf("got %v", err)
	}
}
