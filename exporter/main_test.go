package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "czk_TEST-SECRET-0123456789abcdef"

// apiRecord is the test oracle's view of one record: decoded with
// encoding/json, independently of the encoder under test.
type apiRecord struct {
	Timestamp   string              `json:"timestamp"`
	Granularity string              `json:"granularity"`
	ElementName string              `json:"element_name"`
	Filter      map[string][]string `json:"filter"`
	Value       string              `json:"value"`
}

func (r apiRecord) id() string {
	f, _ := json.Marshal(r.Filter)
	return r.Timestamp + "|" + r.Granularity + "|" + r.ElementName + "|" + string(f)
}

// fakeAPI is a minimal CloudZero stand-in: it records what it accepts, and
// a hook decides the status of each request.
type fakeAPI struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	sizes    []int                     // records per accepted request, in order
	got      map[string]map[string]int // stream -> record id -> times accepted
	values   map[string]map[string]float64
	// respond returns the status (0 = 200) and body for request number n
	// (from 1); it may set response headers in h.
	respond respondFunc
}

type respondFunc func(n int, stream string, records int, h http.Header) (status int, body string)

func newFakeAPI(t testing.TB, respond respondFunc) *fakeAPI {
	f := &fakeAPI{t: t, got: map[string]map[string]int{}, values: map[string]map[string]float64{}, respond: respond}
	f.srv = httptest.NewServer(http.HandlerFunc(f.handle))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) client() *Client { return NewClient(f.srv.Client(), f.srv.URL, testKey) }

func (f *fakeAPI) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct{ Records []apiRecord }
	if err := json.Unmarshal(body, &req); err != nil {
		f.t.Errorf("invalid JSON body: %v", err)
		w.WriteHeader(400)
		return
	}
	stream := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, apiPath), "/sum")
	f.mu.Lock()
	f.requests++
	n := f.requests
	f.mu.Unlock()
	if f.respond != nil {
		if code, msg := f.respond(n, stream, len(req.Records), w.Header()); code != 0 && code != 200 {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, msg)
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes = append(f.sizes, len(req.Records))
	if f.got[stream] == nil {
		f.got[stream] = map[string]int{}
		f.values[stream] = map[string]float64{}
	}
	for _, rec := range req.Records {
		v, err := strconv.ParseFloat(rec.Value, 64)
		if err != nil || !(v > 0) {
			f.t.Errorf("bad value %q", rec.Value)
		}
		f.got[stream][rec.id()]++
		f.values[stream][rec.id()] += v
	}
}

// checkOnce asserts the server accepted exactly the records of want, each once.
func (f *fakeAPI) checkOnce(t *testing.T, want *record.Set) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for _, stream := range want.Streams() {
		for k, v := range want.Records(stream) {
			var rec apiRecord
			if err := json.Unmarshal(record.AppendRecord(nil, k, v), &rec); err != nil {
				t.Fatal(err)
			}
			if c := f.got[stream][rec.id()]; c != 1 {
				t.Fatalf("stream %s record %s received %d times", stream, rec.id(), c)
			}
			if got := f.values[stream][rec.id()]; got != v {
				t.Fatalf("value %v, want %v", got, v)
			}
			total++
		}
	}
	n := 0
	for _, m := range f.got {
		n += len(m)
	}
	if n != total {
		t.Fatalf("server holds %d records, want %d", n, total)
	}
}

// makeSet builds n records per stream with realistic keys.
func makeSet(t testing.TB, n int, streams ...string) *record.Set {
	s := record.NewSet()
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, stream := range streams {
		for i := range n {
			k, err := record.NewKey(record.Record{
				Timestamp:   base.Add(time.Duration(i%24) * time.Hour),
				Granularity: record.Hourly,
				ElementName: fmt.Sprintf("customer-%06d", i),
				Filter: []record.Dimension{
					{Key: "custom:feature", Values: []string{[]string{"billing", "search", "export"}[i%3]}},
					{Key: "tag:environment", Values: []string{"prod"}},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			s.Add(stream, k, float64(i%1000+1)+0.25)
		}
	}
	return s
}

// fakeClock is a Clock whose Sleep advances time at once.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
	return nil
}
