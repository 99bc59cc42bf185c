package exporter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type waitLog struct {
	mu    sync.Mutex
	total map[string]time.Duration
}

func (w *waitLog) onWait(_ context.Context, d time.Duration, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total == nil {
		w.total = map[string]time.Duration{}
	}
	w.total[reason] += d
}

func (w *waitLog) get(reason string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.total[reason]
}

func TestLimiterRateAndBurst(t *testing.T) {
	clk := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	var wl waitLog
	l := NewLimiter(LimiterConfig{RecordsPerSecond: 100, Burst: 10, Clock: clk, OnWait: wl.onWait})
	ctx := context.Background()
	steps := []struct {
		n        int
		wantWait time.Duration
	}{
		{10, 0},                      // the full bucket
		{10, 100 * time.Millisecond}, // refill 10 at 100/s
		{1, 10 * time.Millisecond},
		{25, 250 * time.Millisecond}, // above the burst: waits in pieces
	}
	for i, s := range steps {
		before := clk.slept
		if err := l.Wait(ctx, s.n); err != nil {
			t.Fatal(err)
		}
		if got := clk.slept - before; got != s.wantWait {
			t.Fatalf("step %d: waited %v, want %v", i, got, s.wantWait)
		}
	}
	if wl.get("rate") != 360*time.Millisecond || l.MaxChunk() != 10 {
		t.Fatalf("reported %v, MaxChunk %d", wl.get("rate"), l.MaxChunk())
	}
	if l.TryTake(1) || l.TryTake(11) {
		t.Fatal("TryTake succeeded on an empty bucket")
	}
	clk.now = clk.now.Add(time.Second)
	if !l.TryTake(10) || l.TryTake(1) {
		t.Fatal("TryTake after refill")
	}
}

func TestLimiterDailyBudget(t *testing.T) {
	clk := &fakeClock{now: time.Date(2025, 6, 1, 23, 59, 0, 0, time.UTC)}
	var wl waitLog
	l := NewLimiter(LimiterConfig{RecordsPerDay: 100, Clock: clk, OnWait: wl.onWait})
	ctx := context.Background()
	if err := l.Wait(ctx, 60); err != nil || clk.slept != 0 {
		t.Fatal(err, clk.slept)
	}
	if left, limited := l.BudgetLeft(); left != 40 || !limited {
		t.Fatal(left, limited)
	}
	if l.TryTake(41) || !l.TryTake(30) {
		t.Fatal("TryTake")
	}
	// 10 left: 50 must wait for the next UTC day.
	if err := l.Wait(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC); !clk.Now().Equal(want) || wl.get("daily_budget") != time.Minute {
		t.Fatalf("now %v, reported %v", clk.Now(), wl.get("daily_budget"))
	}
	if left, _ := l.BudgetLeft(); left != 50 {
		t.Fatal(left)
	}
	l.Refund(20)
	if left, _ := l.BudgetLeft(); left != 70 {
		t.Fatal(left)
	}
	// More than a whole day's budget can never be granted.
	if err := l.Wait(ctx, 101); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	// The non-blocking form returns a BudgetError with the time to midnight.
	clk.now = time.Date(2025, 6, 2, 18, 0, 0, 0, time.UTC)
	if err := l.wait(ctx, 71, false); !errors.Is(err, ErrBudgetExhausted) || RetryAfter(err) != 6*time.Hour || !errors.Is(err, ErrBudgetExhausted) {
		t.Fatal(err)
	}
}

func TestLimiterContextUnblocks(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		l := NewLimiter(LimiterConfig{RecordsPerSecond: 0.01, Burst: 1})
		if err := l.Wait(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := l.Wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatal(err, time.Since(start))
		}
	})
	t.Run("daily budget", func(t *testing.T) {
		l := NewLimiter(LimiterConfig{RecordsPerDay: 5})
		if !l.TryTake(5) {
			t.Fatal("TryTake")
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		err := l.Wait(ctx, 1)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBudgetExhausted) {
			t.Fatal(err)
		}
		if left, _ := l.BudgetLeft(); left != 0 {
			t.Fatal(left)
		}
	})
	t.Run("done before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := NewLimiter(LimiterConfig{}).Wait(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})
}

func TestLimiterRealTime(t *testing.T) {
	l := NewLimiter(LimiterConfig{RecordsPerSecond: 1000, Burst: 10})
	start := time.Now()
	for range 6 {
		if err := l.Wait(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
	}
	// 60 records: 10 from the bucket, 50 at 1000/s.
	if d := time.Since(start); d < 45*time.Millisecond || d > 5*time.Second {
		t.Fatal(d)
	}
}

func TestNilAndUnlimitedLimiter(t *testing.T) {
	for _, l := range []*Limiter{nil, NewLimiter(LimiterConfig{})} {
		if err := l.Wait(context.Background(), 1e9); err != nil || !l.TryTake(1e9) || l.MaxChunk() != 0 {
			t.Fatal(err)
		}
		if _, limited := l.BudgetLeft(); limited {
			t.Fatal("limited")
		}
		l.Refund(1)
	}
}
