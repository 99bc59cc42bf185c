package exporter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Clock is the time source of a Limiter; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the system clock; Sleep returns ctx.Err() when ctx ends first.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LimiterConfig configures a Limiter. Records are the tokens.
type LimiterConfig struct {
	RecordsPerSecond float64 // token refill rate; <= 0 = no rate limit
	Burst            int     // bucket size; < 1 is taken as 1
	RecordsPerDay    int     // budget per UTC day; 0 = none
	// OnWait, if set, is called after every wait with the time spent and
	// the reason: "rate" or "daily_budget". Publish it as a metric.
	OnWait func(ctx context.Context, waited time.Duration, reason string)
	Clock  Clock // nil = real time
}

// Limiter is the client-side rate limit: a token bucket of records
// (golang.org/x/time/rate) and a budget of records per UTC day. It is safe
// for concurrent use; a nil *Limiter allows everything.
//
// The daily budget counts records handed out by Wait and TryTake since the
// last UTC midnight (the Sender gives back records CloudZero certainly did
// not apply, see Refund). When it is used up, Wait blocks until the next UTC
// midnight or until ctx is done; a caller that prefers not to wait checks
// BudgetLeft or uses TryTake.
type Limiter struct {
	rl     *rate.Limiter // nil = no rate limit
	burst  int
	perDay int
	onWait func(context.Context, time.Duration, string)
	clock  Clock

	mu   sync.Mutex
	day  int64 // UTC day number the count belongs to
	used int
}

// NewLimiter returns a Limiter for cfg.
func NewLimiter(cfg LimiterConfig) *Limiter {
	l := &Limiter{perDay: max(cfg.RecordsPerDay, 0), onWait: cfg.OnWait, clock: cfg.Clock}
	if l.clock == nil {
		l.clock = RealClock{}
	}
	if cfg.RecordsPerSecond > 0 {
		l.burst = max(cfg.Burst, 1)
		l.rl = rate.NewLimiter(rate.Limit(cfg.RecordsPerSecond), l.burst)
	}
	return l
}

// MaxChunk is the largest n worth asking for at once (the burst, and the
// daily budget), or 0 when there is no limit. Wait accepts larger n for the
// rate (it waits in pieces), not for the daily budget.
func (l *Limiter) MaxChunk() int {
	if l == nil {
		return 0
	}
	m := l.burst
	if l.perDay > 0 && (m == 0 || l.perDay < m) {
		m = l.perDay
	}
	return m
}

// reservable reports whether n records fit in one day's budget, so that
// they can be taken at once before sending.
func (l *Limiter) reservable(n int) bool {
	return l != nil && l.perDay > 0 && n > 0 && n <= l.perDay
}

// BudgetLeft returns the records left in today's (UTC) budget; limited is
// false when there is no daily budget.
func (l *Limiter) BudgetLeft() (left int, limited bool) {
	if l == nil || l.perDay == 0 {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollover()
	return l.perDay - l.used, true
}

// Wait blocks until n records may be sent: first the daily budget (waiting
// for the next UTC day when today's is used up), then the rate (a request
// larger than the burst waits in pieces). It returns ctx's error if ctx is
// done first, wrapped with ErrBudgetExhausted when it was waiting for the
// budget; nothing is then taken. n larger than the whole daily budget is an
// error right away.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	return l.wait(ctx, n, true)
}

// wait is Wait; with block false it returns a *BudgetError instead of
// waiting for the next UTC day.
func (l *Limiter) wait(ctx context.Context, n int, block bool) error {
	if err := l.waitBudget(ctx, n, block); err != nil {
		return err
	}
	if err := l.waitRate(ctx, n); err != nil {
		l.Refund(n)
		return err
	}
	return nil
}

// waitBudget takes n records from the daily budget, waiting for the next
// UTC day while they do not fit (or returning a *BudgetError when block is
// false).
func (l *Limiter) waitBudget(ctx context.Context, n int, block bool) error {
	if l == nil || n <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.perDay == 0 {
		return nil
	}
	if n > l.perDay {
		return fmt.Errorf("%w: %d records asked, daily budget is %d", ErrInvalid, n, l.perDay)
	}
	start := l.clock.Now()
	for {
		wait, ok := l.takeBudget(n)
		if ok {
			return nil
		}
		if !block {
			return &BudgetError{RetryAfter: wait}
		}
		err := l.clock.Sleep(ctx, wait)
		l.report(ctx, start, "daily_budget")
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBudgetExhausted, err)
		}
	}
}

// waitRate waits until the token bucket has n records (in pieces of at most
// the burst).
func (l *Limiter) waitRate(ctx context.Context, n int) error {
	if l == nil || l.rl == nil || n <= 0 {
		return nil
	}
	start, waited := l.clock.Now(), false
	defer func() {
		if waited { // calls that did not wait report nothing
			l.report(ctx, start, "rate")
		}
	}()
	for rem := n; rem > 0; {
		k := min(rem, l.burst)
		now := l.clock.Now()
		r := l.rl.ReserveN(now, k)
		if d := r.DelayFrom(now); d > 0 {
			waited = true
			if err := l.clock.Sleep(ctx, d); err != nil {
				r.CancelAt(l.clock.Now())
				return err
			}
		}
		rem -= k
	}
	return nil
}

// TryTake takes n records if the budget and the bucket have them now, and
// reports whether it did. It never waits; n above the burst always fails.
func (l *Limiter) TryTake(n int) bool {
	if l == nil || n <= 0 {
		return true
	}
	if l.perDay > 0 {
		if _, ok := l.takeBudget(n); !ok {
			return false
		}
	}
	if l.rl != nil && !l.rl.AllowN(l.clock.Now(), n) {
		l.Refund(n)
		return false
	}
	return true
}

// Refund gives n records back to today's budget, for records taken but not
// accepted by CloudZero. (Taken before a UTC midnight and refunded after it,
// they are credited to the new day: at most one chunk's worth.)
func (l *Limiter) Refund(n int) {
	if l == nil || l.perDay == 0 || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rollover()
	l.used = max(l.used-n, 0)
}

// takeBudget takes n from today's budget, or returns the time until the
// next UTC midnight when it does not fit.
func (l *Limiter) takeBudget(n int) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.rollover()
	if l.used+n <= l.perDay {
		l.used += n
		return 0, true
	}
	next := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	return next.Sub(now), false
}

// rollover resets the count at a new UTC day; l.mu must be held.
func (l *Limiter) rollover() time.Time {
	now := l.clock.Now()
	if d := dayNumber(now); d != l.day {
		l.day, l.used = d, 0
	}
	return now
}

func dayNumber(t time.Time) int64 { return t.UTC().Unix() / 86400 }

func (l *Limiter) report(ctx context.Context, start time.Time, reason string) {
	if d := l.clock.Now().Sub(start); d > 0 && l.onWait != nil {
		l.onWait(ctx, d, reason)
	}
}
