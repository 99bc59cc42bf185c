package exporter

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"
)

// The flusher sends what the ledger holds, in rounds:
//
//   - a regular round every FlushInterval (on the wall clock's multiples of
//     it) sends the keys that changed: closed buckets first, then open
//     ones, each open key at most once per FlushInterval, fewer when the
//     daily budget cannot afford them all (openAllowance);
//   - a closing round settleDelay after each UTC hour sends the keys of
//     the buckets that just closed;
//   - Flush and Shutdown send everything.
//
// A round that fails (retryable) is retried after a backoff, merged with
// whatever round came due meanwhile. One request is under way at a time.

// selection says which keys a round sends.
type selection struct {
	all     bool  // everything (Flush, Shutdown)
	closing bool  // keys of closed buckets
	regular bool  // closed, and the open keys due at tau
	tau     int64 // the regular round's scheduled time, unix nanoseconds
}

func (s selection) any() bool { return s.all || s.closing || s.regular }

// run is the flusher goroutine.
func (d *Delivery) run() {
	defer close(d.done)
	bo := backoff{cfg: d.cfg.Backoff}
	F := d.cfg.FlushInterval
	now := d.now()
	nextRegular := now.Truncate(F).Add(F)
	nextClosing := nextClose(now)
	var sel selection
	var retryAt time.Time
	var waiters []chan error
	for {
		wake := nextRegular
		if nextClosing.Before(wake) {
			wake = nextClosing
		}
		if sel.any() && retryAt.Before(wake) {
			wake = retryAt
		}
		timer := time.NewTimer(wake.Sub(d.now()))
		select {
		case <-timer.C:
		case r := <-d.flushReq:
			waiters = append(waiters, r)
			sel.all, retryAt = true, time.Time{}
		case deadline := <-d.stop:
			timer.Stop()
			err := d.final(deadline)
			for _, w := range waiters {
				w <- errors.Join(ErrStopped, err)
			}
			return
		}
		timer.Stop()
		now = d.now()
		if !now.Before(nextRegular) {
			sel.regular, sel.tau = true, nextRegular.UnixNano()
			nextRegular = now.Truncate(F).Add(F)
		}
		if !now.Before(nextClosing) {
			sel.closing = true
			nextClosing = nextClose(now)
		}
		if !sel.any() || now.Before(retryAt) {
			continue
		}
		before := d.acceptedCount()
		if err := d.round(d.runCtx, sel, now.UnixNano()); errors.Is(err, errBisectionGoesOn) {
			retryAt = d.now() // at once: nothing failed
		} else if err != nil {
			if d.acceptedCount() != before {
				bo.reset() // CloudZero accepts again: retry the rest soon
			}
			delay := bo.next(err)
			retryAt = d.now().Add(delay)
			d.log.Info("Sending to CloudZero failed; retrying", zap.Duration("in", delay), zap.Error(err))
		} else {
			sel, retryAt = selection{}, time.Time{}
			bo.reset()
			for _, w := range waiters {
				w <- nil
			}
			waiters = waiters[:0]
		}
		d.askCompaction()
	}
}

// askCompaction wakes the compactor, if it is not at work already.
func (d *Delivery) askCompaction() {
	select {
	case d.compactReq <- struct{}{}:
	default:
	}
}

// compactor is the goroutine that writes snapshots, apart from the flusher
// so that a long one never holds up sends or the shutdown flush. It stops
// (between two storage writes) when shutdown begins.
func (d *Delivery) compactor(ctx context.Context) {
	defer close(d.compactDone)
	for {
		select {
		case <-d.compactReq:
			d.compact(ctx)
		case <-ctx.Done():
			return
		}
	}
}

func (d *Delivery) acceptedCount() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.accepted
}

// nextClose is when the next closing round is due: settleDelay after the
// next UTC hour (every DAILY bucket ends on an hour too).
func nextClose(now time.Time) time.Time {
	t := now.UTC().Truncate(time.Hour).Add(settleDelay)
	if !t.After(now) {
		t = t.Add(time.Hour)
	}
	return t
}

// final is the shutdown flush: everything, retried every
// shutdownRetryEvery (or after a Retry-After that ends before the
// deadline) until the deadline.
func (d *Delivery) final(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(d.runCtx, deadline)
	defer cancel()
	for {
		err := d.round(ctx, selection{all: true}, d.now().UnixNano())
		if err == nil || errors.Is(err, errBisectionGoesOn) {
			if !d.sendable() || ctx.Err() != nil {
				return nil
			}
			continue // a bisection left records for another round
		}
		delay := max(shutdownRetryEvery, RetryAfter(err))
		if errors.Is(err, ErrBudgetExhausted) || ctx.Err() != nil || time.Until(deadline) < delay {
			return err
		}
		d.log.Debug("Sending to CloudZero failed while shutting down; retrying", zap.Duration("in", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// sendable reports whether the ledger holds anything to send now.
func (d *Delivery) sendable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now().UnixNano()
	for i := range d.ledger.entries {
		if e := &d.ledger.entries[i]; d.ledger.sendable(e) && e.started(now) {
			return true
		}
	}
	return false
}

// batch is the ids of one stream a round sends, in order.
type batch struct {
	stream uint16
	ids    []uint32
}

// round sends the keys sel selects; it returns nil when every one of them
// was settled, or the retryable error that stopped it.
func (d *Delivery) round(ctx context.Context, sel selection, now int64) error {
	d.mu.Lock()
	if !sel.all {
		d.discardNonPositive(ctx, now)
		d.ledger.prune(now, int64(settleDelay), int64(d.cfg.Translator.MaxAge))
	}
	batches := d.selectDue(sel, now)
	streams := slices.Clone(d.ledger.streams)
	d.mu.Unlock()

	tau := now
	if sel.regular && !sel.all {
		tau = sel.tau
	}
	var failed error
	for _, b := range batches {
		for pos := 0; pos < len(b.ids); {
			n, err := d.sendChunk(ctx, streams[b.stream], b.ids[pos:], tau)
			pos += n
			switch {
			case err == nil:
				delete(d.failing, b.stream)
				continue
			case errors.Is(err, errBisectionGoesOn):
			case stopsRound(err) || ctx.Err() != nil:
				return err
			default:
				// A failure of this stream's requests: the others still go,
				// and this stream waits for its own backoff.
				f := d.failing[b.stream]
				if f == nil {
					f = &streamFailure{bo: backoff{cfg: d.cfg.Backoff}}
					d.failing[b.stream] = f
				}
				f.until = time.Unix(0, now).Add(f.bo.next(err)).UnixNano()
			}
			if failed == nil || errors.Is(failed, errBisectionGoesOn) {
				failed = err
			}
			break
		}
	}
	return failed
}

// streamFailure is the backoff of a stream whose requests fail while the
// others' succeed: its keys are not sent again before until (except by
// Flush and Shutdown), so that it does not use up requests meanwhile.
type streamFailure struct {
	bo    backoff
	until int64
}

// stopsRound reports whether a failure concerns every stream, so that the
// round stops: CloudZero asks to slow down (429, 503), cannot be reached,
// or the daily budget is used up. Other failures (a 500 for one stream's
// request) stop only that stream's part of the round.
func stopsRound(err error) bool {
	if errors.Is(err, errBisectionGoesOn) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode == http.StatusTooManyRequests || se.StatusCode == http.StatusServiceUnavailable
	}
	return true // transport error, budget, storage
}

// discardNonPositive drops the keys of closed buckets whose net usage is
// not > 0, counting them (non_positive) with their units (d.mu held).
func (d *Delivery) discardNonPositive(ctx context.Context, now int64) {
	l := d.ledger
	var es []sendEntry
	for i := range l.entries {
		if e := &l.entries[i]; l.discardable(e, now, int64(settleDelay)) {
			es = append(es, sendEntry{id: uint32(i), key: e.key, value: l.discard(uint32(i))})
		}
	}
	if len(es) == 0 {
		return
	}
	if d.journal != nil {
		if err := d.journal.append(context.WithoutCancel(ctx), d.idsRecord(recDiscard, 0, es)); err != nil {
			d.log.Error("Writing to storage failed; after a restart these non-positive records are dropped again", zap.Error(err))
		}
	}
	byStream := map[uint16][]sendEntry{}
	for _, e := range es {
		s := l.entries[e.id].stream
		byStream[s] = append(byStream[s], e)
	}
	for s, part := range byStream {
		units := 0.0
		for _, e := range part {
			units -= e.value
		}
		d.cfg.Observer.dropped(ctx, l.streams[s], "non_positive", len(part), units)
		d.drops.log(l.streams[s], "non_positive", len(part), units,
			errors.New("the net usage of these closed buckets is not > 0 (negative contributions, e.g. value: sum of a gauge); CloudZero takes only values > 0"))
	}
}

// selectDue lists the keys sel sends (d.mu held): keys of closed buckets and
// keys whose last request failed first, then open keys, oldest send first,
// as many as the daily budget affords.
func (d *Delivery) selectDue(sel selection, now int64) []batch {
	l := d.ledger
	F := int64(d.cfg.FlushInterval)
	var first, open []uint32
	hourlyOpen := 0
	for i := range l.entries {
		e := &l.entries[i]
		if !e.live {
			continue
		}
		closed := e.bucketEnd+int64(settleDelay) <= now
		if !closed && e.bucketEnd-now <= int64(time.Hour) && e.bucketEnd-now > 0 {
			hourlyOpen++ // approximately: keys of buckets ending within the hour
		}
		if !l.sendable(e) || !e.started(now) {
			continue
		}
		if f := d.failing[e.stream]; f != nil && !sel.all && now < f.until {
			continue // the stream waits for its backoff
		}
		switch {
		case sel.all, e.state == stateFailed, closed && (sel.closing || sel.regular):
			first = append(first, uint32(i))
		case sel.regular && e.lastSend <= sel.tau-F:
			open = append(open, uint32(i))
		}
	}
	if len(open) > 0 {
		left, limited := d.cfg.Limiter.BudgetLeft()
		allowed := openAllowance(left, limited, time.Unix(0, now), d.cfg.FlushInterval, len(first), hourlyOpen, len(open))
		if allowed < len(open) {
			slices.SortFunc(open, func(a, b uint32) int { return cmpInt64(l.entries[a].lastSend, l.entries[b].lastSend) })
			d.log.Debug("Daily record budget: sending only part of the changed keys of open buckets this round",
				zap.Int("sent", allowed), zap.Int("changed", len(open)), zap.Int("budget_left", left))
			open = open[:allowed]
		}
	}
	return append(groupByStream(l, first), groupByStream(l, open)...)
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func groupByStream(l *ledger, ids []uint32) []batch {
	var out []batch
	byStream := map[uint16]int{}
	for _, id := range ids {
		s := l.entries[id].stream
		i, ok := byStream[s]
		if !ok {
			i = len(out)
			byStream[s] = i
			out = append(out, batch{stream: s})
		}
		out[i].ids = append(out[i].ids, id)
	}
	slices.SortFunc(out, func(a, b batch) int { return int(a.stream) - int(b.stream) })
	return out
}

// openAllowance is how many changed keys of open buckets a regular round
// may send under the daily budget. What is left today must first pay for
// this round's closed keys and for the closing sends still to come before
// UTC midnight (each hourly key once per hour); the rest is shared evenly
// among the rounds left today. Keys not sent wait (merging) for a later
// round or for their bucket's close.
func openAllowance(left int, limited bool, now time.Time, interval time.Duration, closedNow, hourlyOpenKeys, changedOpen int) int {
	if !limited {
		return changedOpen
	}
	untilMidnight := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now)
	closingsLeft := int(untilMidnight / time.Hour) // the 23:00 bucket closes after midnight, on tomorrow's budget
	spendable := left - closedNow - hourlyOpenKeys*closingsLeft
	if spendable <= 0 {
		return 0
	}
	rounds := max(1, int(math.Ceil(float64(untilMidnight)/float64(interval))))
	return min(changedOpen, spendable/rounds)
}

// backoff computes retry delays (see Backoff).
type backoff struct {
	cfg Backoff
	n   int
}

func (b *backoff) reset() { b.n = 0 }

// next returns the delay before the next retry after err: the backoff, or
// what CloudZero asked for (Retry-After) or the daily budget requires, if
// longer.
func (b *backoff) next(err error) time.Duration {
	d := b.cfg.Delay(b.n, err)
	b.n++
	return d
}

// Delay is the wait before the retry that follows n consecutive failures
// (n from 0), the last with err: InitialInterval × Multiplier^n up to
// MaxInterval, randomised, or what CloudZero asked for (Retry-After) or
// the daily budget requires, if longer.
func (b Backoff) Delay(n int, err error) time.Duration {
	d := float64(b.InitialInterval) * math.Pow(b.Multiplier, float64(n))
	d = min(d, float64(b.MaxInterval))
	if r := b.RandomizationFactor; r > 0 {
		d *= 1 - r + 2*r*rand.Float64()
	}
	return max(time.Duration(d), RetryAfter(err))
}
