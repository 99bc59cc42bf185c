package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// counts collects what a Sender reports through its Observer.
type counts struct {
	mu                sync.Mutex
	sent, dry, bytes  int
	dropped, requests map[string]int
}

func (c *counts) observer() Observer {
	c.dropped, c.requests = map[string]int{}, map[string]int{}
	return Observer{
		Sent: func(_ context.Context, _ string, n, b int) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.sent += n
			c.bytes += b
		},
		DryRun: func(_ context.Context, _ string, n, _ int) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.dry += n
		},
		Dropped: func(_ context.Context, _, reason string, n int) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.dropped[reason] += n
		},
		Request: func(_ context.Context, _, class string) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.requests[class]++
		},
	}
}

func TestSendAll(t *testing.T) {
	api := newFakeAPI(t, nil)
	var c counts
	s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 1000}, Observer: c.observer()})
	set := makeSet(t, 4500, "a", "b")
	unsent, err := s.Send(context.Background(), set)
	if err != nil || unsent != nil {
		t.Fatal(unsent.Len(), err)
	}
	api.checkOnce(t, set)
	if want := []int{1000, 1000, 1000, 1000, 500, 1000, 1000, 1000, 1000, 500}; !slices.Equal(api.sizes, want) {
		t.Fatalf("chunks %v", api.sizes)
	}
	if c.sent != 9000 || c.requests["2xx"] != 10 || c.bytes < 9000*150 || len(c.dropped) != 0 {
		t.Fatalf("%v", &c)
	}
	if set.Len() != 9000 {
		t.Fatal("Send modified its input")
	}
}

// A 503 storm, retried by the caller with what Send returns, delivers every
// record exactly once.
func TestSend503Storm(t *testing.T) {
	api := newFakeAPI(t, func(n int, _ string, _ int, h http.Header) (int, string) {
		if n <= 20 {
			h.Set("Retry-After", "0")
			return 503, ""
		}
		return 0, ""
	})
	var c counts
	s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 100}, Observer: c.observer()})
	set := makeSet(t, 1000, "a", "b")
	pending := set
	var err error
	for try := 0; try < 50 && pending != nil; try++ {
		pending, err = s.Send(context.Background(), pending)
		if err != nil && (!IsThrottle(err) || IsPermanent(err)) {
			t.Fatalf("try %d: %v", try, err)
		}
	}
	if pending != nil || err != nil {
		t.Fatalf("still %d pending: %v", pending.Len(), err)
	}
	api.checkOnce(t, set)
	if c.requests["5xx"] != 20 || c.requests["2xx"] != 20 || c.sent != 2000 {
		t.Fatalf("%v", &c)
	}
}

func TestSend413Split(t *testing.T) {
	const maxAccepted = 7
	api := newFakeAPI(t, func(_ int, _ string, records int, _ http.Header) (int, string) {
		if records > maxAccepted {
			return 413, ""
		}
		return 0, ""
	})
	var c counts
	s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 50}, Observer: c.observer()})
	set := makeSet(t, 120, "a")
	if unsent, err := s.Send(context.Background(), set); err != nil || unsent != nil {
		t.Fatal(err)
	}
	api.checkOnce(t, set)
	for _, n := range api.sizes {
		if n > maxAccepted {
			t.Fatalf("accepted a request of %d", n)
		}
	}
	if c.sent != 120 || c.requests["4xx"] == 0 {
		t.Fatalf("%v", &c)
	}

	// A single record that is still too large is dropped for good.
	api = newFakeAPI(t, func(int, string, int, http.Header) (int, string) { return 413, "" })
	c = counts{}
	s = NewSender(api.client(), SenderConfig{Observer: c.observer()})
	unsent, err := s.Send(context.Background(), makeSet(t, 4, "a"))
	var de *DropError
	if unsent != nil || !errors.As(err, &de) || !IsPermanent(err) || de.Dropped != 4 || de.Total != 4 {
		t.Fatal(unsent, err)
	}
	if c.dropped["status_413"] != 4 || c.requests["4xx"] != 7 { // 4, 2+2, 1+1+1+1
		t.Fatalf("%v", &c)
	}
}

// Chunk 1 accepted, chunk 2 refused: unsent holds exactly chunk 2 onwards,
// later streams included.
func TestSendPartialFailure(t *testing.T) {
	for _, status := range []int{500, 503, 429, 408} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			api := newFakeAPI(t, func(n int, _ string, _ int, _ http.Header) (int, string) {
				if n == 2 {
					return status, ""
				}
				return 0, ""
			})
			s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 10}})
			set := makeSet(t, 35, "a", "b")
			unsent, err := s.Send(context.Background(), set)
			if err == nil || IsPermanent(err) {
				t.Fatal(err)
			}
			entries, _ := SortedEntries(nil, set.Records("a"))
			want := record.NewSet()
			for _, e := range entries[10:] {
				want.Add("a", e.Key, e.Value)
			}
			want.Merge(subset(set, "b"))
			if !sameSet(unsent, want) {
				t.Fatalf("unsent has %d records, want %d", unsent.Len(), want.Len())
			}
			accepted := record.NewSet()
			for _, e := range entries[:10] {
				accepted.Add("a", e.Key, e.Value)
			}
			api.checkOnce(t, accepted)
			// Retrying the unsent set completes the delivery, each record once.
			if unsent, err = s.Send(context.Background(), unsent); err != nil || unsent != nil {
				t.Fatal(err)
			}
			api.checkOnce(t, set)
		})
	}
}

func TestSendPermanentFailures(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	refuse := "a"
	api := newFakeAPI(t, func(_ int, stream string, _ int, _ http.Header) (int, string) {
		switch stream {
		case refuse:
			return 400, `{"message":"unknown filter key"}`
		case "c":
			return 503, ""
		}
		return 0, ""
	})
	var c counts
	s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 10}, Observer: c.observer(), Logger: zap.New(core)})

	// Stream a is refused (3 chunks), stream b still goes through.
	set := makeSet(t, 25, "a", "b")
	unsent, err := s.Send(context.Background(), set)
	var de *DropError
	if unsent != nil || !errors.As(err, &de) || !IsPermanent(err) || de.Dropped != 25 || de.Total != 50 {
		t.Fatal(unsent, err)
	}
	api.checkOnce(t, subset(set, "b"))
	if c.dropped["status_400"] != 25 || c.requests["4xx"] != 3 || c.sent != 25 {
		t.Fatalf("%v", &c)
	}
	warns := logs.FilterMessage("CloudZero records dropped").All()
	if len(warns) != 1 || !strings.Contains(fmt.Sprint(warns[0].ContextMap()), "unknown filter key") {
		t.Fatalf("%d warnings: %v", len(warns), warns)
	}

	// A permanent drop followed by a retryable failure: the retryable error
	// wins, and unsent holds only what was not handled.
	set = makeSet(t, 5, "a", "c")
	unsent, err = s.Send(context.Background(), set)
	if IsPermanent(err) || !IsThrottle(err) || !sameSet(unsent, subset(set, "c")) {
		t.Fatal(unsent, err)
	}
	if n := logs.FilterMessage("CloudZero records dropped").Len(); n != 1 {
		t.Fatalf("logged %d times within a minute", n)
	}
}

func TestSendInvalidValues(t *testing.T) {
	api := newFakeAPI(t, nil)
	var c counts
	s := NewSender(api.client(), SenderConfig{Observer: c.observer()})
	set := makeSet(t, 3, "a")
	bad := record.NewSet()
	for i, v := range []float64{0, -2} {
		k, _ := record.NewKey(record.Record{Timestamp: mustTime("2025-01-01T00:00:00Z"), Granularity: record.Daily, ElementName: fmt.Sprint(i)})
		bad.Add("a", k, v)
	}
	bad.Merge(set)
	_, err := s.Send(context.Background(), bad)
	if !IsPermanent(err) || c.dropped["invalid_value"] != 2 || c.sent != 3 {
		t.Fatalf("%v %v", err, &c)
	}
	api.checkOnce(t, set)
}

func TestSendDryRun(t *testing.T) {
	var buf bytes.Buffer
	var c counts
	s := NewSender(nil, SenderConfig{DryRun: &buf, Chunker: Chunker{MaxRecords: 4}, Observer: c.observer(),
		Limiter: NewLimiter(LimiterConfig{RecordsPerSecond: 1e-6, Burst: 3, RecordsPerDay: 5})})
	set := makeSet(t, 10, "a", "b")
	if unsent, err := s.Send(context.Background(), set); err != nil || unsent != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	// Chunks as for real (at most the burst, 3), without waiting.
	if len(lines) != 8 || c.dry != 20 || c.sent != 0 || len(c.requests) != 0 {
		t.Fatalf("%d lines, %v", len(lines), &c)
	}
	got := record.NewSet()
	for i, line := range lines {
		stream, body, _ := strings.Cut(line, " ")
		if want := []string{"a", "a", "a", "a", "b", "b", "b", "b"}[i]; stream != want {
			t.Fatalf("line %d stream %q", i, stream)
		}
		var req struct{ Records []apiRecord }
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatal(err)
		}
		for _, r := range req.Records {
			got.Add(stream, record.Key(r.id()), 1)
		}
	}
	if got.Len() != 20 {
		t.Fatal(got.Len())
	}
}

func TestSendWithLimiter(t *testing.T) {
	t.Run("chunks fit the burst", func(t *testing.T) {
		api := newFakeAPI(t, nil)
		s := NewSender(api.client(), SenderConfig{Limiter: NewLimiter(LimiterConfig{RecordsPerSecond: 1e6, Burst: 7})})
		set := makeSet(t, 30, "a")
		if _, err := s.Send(context.Background(), set); err != nil {
			t.Fatal(err)
		}
		api.checkOnce(t, set)
		if want := []int{7, 7, 7, 7, 2}; !slices.Equal(api.sizes, want) {
			t.Fatal(api.sizes)
		}
	})
	t.Run("budget used up, BudgetReturn", func(t *testing.T) {
		api := newFakeAPI(t, func(n int, _ string, _ int, _ http.Header) (int, string) {
			if n == 2 {
				return 503, "" // not applied: given back to the budget
			}
			return 0, ""
		})
		clk := &fakeClock{now: time.Date(2025, 6, 1, 20, 0, 0, 0, time.UTC)}
		l := NewLimiter(LimiterConfig{RecordsPerDay: 25, Clock: clk})
		s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 10}, Limiter: l, Budget: BudgetReturn})
		set := makeSet(t, 40, "a")
		unsent, err := s.Send(context.Background(), set)
		if !IsThrottle(err) || unsent.Len() != 30 {
			t.Fatal(err)
		}
		unsent, err = s.Send(context.Background(), unsent)
		if !errors.Is(err, ErrBudgetExhausted) || RetryAfter(err) != 4*time.Hour || unsent.Len() != 15 {
			t.Fatal(err, unsent.Len())
		}
		if want := []int{10, 10, 5}; !slices.Equal(api.sizes, want) {
			t.Fatal(api.sizes)
		}
		clk.now = clk.now.Add(4 * time.Hour)
		if unsent, err = s.Send(context.Background(), unsent); err != nil || unsent != nil {
			t.Fatal(err)
		}
		api.checkOnce(t, set)
	})
	t.Run("a batch that fits in a day is never half sent", func(t *testing.T) {
		api := newFakeAPI(t, func(n int, _ string, _ int, _ http.Header) (int, string) {
			if n == 3 {
				return 503, "" // the second batch's second chunk: not applied
			}
			return 0, ""
		})
		clk := &fakeClock{now: time.Date(2025, 6, 1, 20, 0, 0, 0, time.UTC)}
		l := NewLimiter(LimiterConfig{RecordsPerDay: 25, Clock: clk})
		s := NewSender(api.client(), SenderConfig{Chunker: Chunker{MaxRecords: 10}, Limiter: l, Budget: BudgetReturn})
		first := makeSet(t, 10, "a")
		if _, err := s.Send(context.Background(), first); err != nil {
			t.Fatal(err)
		}
		// 15 left today; 20 records: none is sent today.
		second := makeSet(t, 20, "b")
		unsent, err := s.Send(context.Background(), second)
		if !errors.Is(err, ErrBudgetExhausted) || unsent.Len() != 20 || len(api.sizes) != 1 {
			t.Fatal(err, unsent.Len(), api.sizes)
		}
		if left, _ := l.BudgetLeft(); left != 15 {
			t.Fatal("budget taken by a batch that was not sent:", left)
		}
		clk.now = clk.now.Add(4 * time.Hour) // next UTC day
		unsent, err = s.Send(context.Background(), unsent)
		if err == nil || unsent.Len() != 10 {
			t.Fatal(err, unsent.Len())
		}
		if left, _ := l.BudgetLeft(); left != 15 {
			t.Fatal("the refused and the unsent records go back to the budget:", left)
		}
		if unsent, err = s.Send(context.Background(), unsent); err != nil || unsent != nil {
			t.Fatal(err)
		}
		if want := []int{10, 10, 10}; !slices.Equal(api.sizes, want) { // accepted requests
			t.Fatal(api.sizes)
		}
	})
	t.Run("budget used up, BudgetWait bounded by ctx", func(t *testing.T) {
		api := newFakeAPI(t, nil)
		l := NewLimiter(LimiterConfig{RecordsPerDay: 10})
		s := NewSender(api.client(), SenderConfig{Limiter: l})
		set := makeSet(t, 15, "a")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		unsent, err := s.Send(ctx, set)
		if !errors.Is(err, ErrBudgetExhausted) || !errors.Is(err, context.DeadlineExceeded) || unsent.Len() != 5 {
			t.Fatal(err)
		}
	})
}

// The API key appears in no error and no log line, even when the server
// echoes it.
func TestAPIKeyNotLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	api := newFakeAPI(t, func(n int, _ string, _ int, _ http.Header) (int, string) {
		return []int{400, 401, 403, 404, 503, 500}[(n-1)%6], "key was " + testKey
	})
	s := NewSender(api.client(), SenderConfig{Logger: zap.New(core), Chunker: Chunker{MaxRecords: 1}})
	var errs []string
	pending := makeSet(t, 6, "a")
	for range 10 {
		var err error
		if pending, err = s.Send(context.Background(), pending); err != nil {
			errs = append(errs, err.Error())
		}
		if pending == nil {
			break
		}
	}
	if len(errs) == 0 || logs.Len() == 0 {
		t.Fatal("nothing to check")
	}
	for _, e := range logs.All() {
		errs = append(errs, e.Message, fmt.Sprint(e.ContextMap()))
	}
	for _, s := range errs {
		if strings.Contains(s, testKey) {
			t.Fatalf("API key leaked: %s", s)
		}
	}
}

func subset(set *record.Set, stream string) *record.Set {
	out := record.NewSet()
	for k, v := range set.Records(stream) {
		out.Add(stream, k, v)
	}
	return out
}

func sameSet(a, b *record.Set) bool {
	if a.Len() != b.Len() {
		return false
	}
	for _, stream := range a.Streams() {
		for k, v := range a.Records(stream) {
			if w, ok := b.Value(stream, k); !ok || w != v {
				return false
			}
		}
	}
	return true
}

func (c *counts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("sent=%d dry=%d bytes=%d dropped=%v requests=%v", c.sent, c.dry, c.bytes, c.dropped, c.requests)
}

// Queue workers call Send in parallel with a shared Limiter.
func TestSendConcurrent(t *testing.T) {
	api := newFakeAPI(t, func(n int, _ string, _ int, _ http.Header) (int, string) {
		if n%5 == 0 {
			return 503, ""
		}
		return 0, ""
	})
	var c counts
	s := NewSender(api.client(), SenderConfig{
		Chunker:  Chunker{MaxRecords: 50},
		Limiter:  NewLimiter(LimiterConfig{RecordsPerSecond: 1e6, Burst: 40, RecordsPerDay: 1e6}),
		Observer: c.observer(),
	})
	all := record.NewSet()
	var wg sync.WaitGroup
	for w := range 4 {
		set := makeSet(t, 300, fmt.Sprintf("w%d-a", w), fmt.Sprintf("w%d-b", w))
		all.Merge(set)
		wg.Go(func() {
			pending := set
			for try := 0; try < 100 && pending != nil; try++ {
				var err error
				if pending, err = s.Send(context.Background(), pending); err != nil && !IsThrottle(err) {
					t.Error(err)
					return
				}
			}
			if pending != nil {
				t.Error("not delivered")
			}
		})
	}
	wg.Wait()
	api.checkOnce(t, all)
	if left, _ := s.cfg.Limiter.BudgetLeft(); left != 1e6-2400 {
		t.Fatalf("budget left %d: refused requests were not given back", left)
	}
}
