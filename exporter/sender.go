package exporter

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Observer receives the Delivery's counts, to publish as metrics. Nil
// fields are skipped. Calls come from the flusher goroutine.
type Observer struct {
	// Sent: records CloudZero accepted (2xx), by operation.
	Sent func(ctx context.Context, stream string, op Op, records int)
	// DryRun: records written to the dry-run writer instead.
	DryRun func(ctx context.Context, stream string, records int)
	// Dropped: records dropped for good, with their units. Reasons:
	// "status_<code>" (refused by CloudZero), "shutdown" (no storage, not
	// delivered within the shutdown timeout).
	Dropped func(ctx context.Context, stream, reason string, records int, units float64)
	// Request: one per HTTP request, class "2xx", "3xx", "4xx", "5xx" or
	// "transport".
	Request func(ctx context.Context, stream, class string)
	// Ambiguous: records of sum requests that failed in a way that does not
	// prove CloudZero did not apply them (5xx, timeout, dropped connection,
	// or a request under way when the process stopped). They are sent
	// again: if CloudZero had applied them, these units count twice.
	Ambiguous func(ctx context.Context, stream string, records int, units float64)
	// Bisected: a request refused with 400 that is split to find the
	// records CloudZero refuses.
	Bisected func(ctx context.Context, stream string)
	// Settled: the keys of a request CloudZero answered for good, refused
	// nil if it accepted them (not in dry-run mode), else the refusal. For
	// callers that report per key (the cloudzero command).
	Settled func(stream string, op Op, keys []record.Key, refused error)
}

func (o Observer) dropped(ctx context.Context, stream, reason string, records int, units float64) {
	if o.Dropped != nil {
		o.Dropped(ctx, stream, reason, records, units)
	}
}

func (o Observer) ambiguous(ctx context.Context, stream string, records int, units float64) {
	if o.Ambiguous != nil {
		o.Ambiguous(ctx, stream, records, units)
	}
}

// sendEntry is one record of a request: its ledger entry and the value the
// request carries (fixed when the entry began).
type sendEntry struct {
	id    uint32
	key   record.Key
	value float64
}

// sendChunk waits on the limiter, begins the next entries of ids that fit
// one request, and sends them. It returns how many of ids it settled (sent,
// refused or skipped) and the retryable error that stopped it, if any.
func (d *Delivery) sendChunk(ctx context.Context, stream string, ids []uint32, tau int64) (int, error) {
	maxBytes, n := d.chunker.limits()
	n = min(n, len(ids))
	if m := d.cfg.Limiter.MaxChunk(); m > 0 {
		n = min(n, m)
	}
	if left, limited := d.cfg.Limiter.BudgetLeft(); limited && left > 0 {
		n = min(n, left) // use up today's budget rather than wait for room for a full chunk
	}
	dry := d.cfg.DryRun != nil
	if !dry {
		if err := d.cfg.Limiter.wait(ctx, n, false); err != nil {
			return 0, err
		}
	}

	d.mu.Lock()
	l := d.ledger
	es := make([]sendEntry, 0, n)
	taken, size := 0, len(bodyPrefix)+len(bodySuffix)
	for _, id := range ids[:n] {
		e := &l.entries[id]
		if !l.sendable(e) { // settled meanwhile (cannot happen today: only this goroutine sends)
			taken++
			continue
		}
		if sz := len(e.key) + 4 + record.MaxValueChars; len(es) > 0 && size+sz > maxBytes {
			break
		} else {
			size += sz
		}
		es = append(es, sendEntry{id: id, key: e.key})
		taken++
	}
	var undo []entry // with storage: the entries as they were, should the begin record fail
	if d.journal != nil {
		undo = make([]entry, len(es))
	}
	for i := range es {
		if undo != nil {
			undo[i] = l.entries[es[i].id]
		}
		es[i].value = l.begin(es[i].id, tau)
	}
	var err error
	if d.journal != nil && len(es) > 0 {
		if err = d.journal.append(ctx, d.idsRecord(recBegin, tau, es)); err != nil {
			for i := range es {
				l.entries[es[i].id] = undo[i] // not sent: as it was
			}
		}
	}
	d.mu.Unlock()
	sent := len(es)
	if err != nil {
		sent = 0
	}
	if !dry && n > sent {
		d.cfg.Limiter.Refund(n - sent)
	}
	if err != nil {
		d.log.Error("Writing to storage failed; the records are not sent until it works", zap.Error(err))
		return 0, err
	}
	if len(es) == 0 {
		return taken, nil
	}
	return taken, d.post(ctx, d.cfg.Op, stream, es)
}

// idsRecord encodes a begin, confirm or fail record of es (d.mu held).
func (d *Delivery) idsRecord(typ byte, tau int64, es []sendEntry) []byte {
	b := append(d.encBuf[:0], typ)
	if typ == recBegin {
		b = appendU64(b, uint64(tau))
	}
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.id))
	}
	d.encBuf = b
	return b
}

// request sends es as one request with op and returns CloudZero's answer
// (nil on 2xx), counting the request. In dry-run mode the body is written
// out instead.
func (d *Delivery) request(ctx context.Context, op Op, stream string, es []sendEntry) error {
	bufp := bufPool.Get().(*[]byte)
	body := appendEntries((*bufp)[:0], es)
	*bufp = body
	defer bufPool.Put(bufp)
	if d.cfg.DryRun != nil {
		if err := d.writeDryRun(stream, op, body); err != nil {
			return err
		}
		if f := d.cfg.Observer.DryRun; f != nil {
			f(ctx, stream, len(es))
		}
		return nil
	}
	err := d.cfg.Client.Post(ctx, op, stream, body)
	if f := d.cfg.Observer.Request; f != nil && !errors.Is(err, ErrInvalid) {
		f(ctx, stream, statusClass(err))
	}
	return err
}

// post sends es (already begun) with op and settles every entry: accepted,
// refused or failed. It returns the retryable error when a part failed.
func (d *Delivery) post(ctx context.Context, op Op, stream string, es []sendEntry) error {
	err := d.request(ctx, op, stream, es)
	switch {
	case err == nil:
		d.settle(ctx, stream, op, es, outcomeAccepted, nil)
		return nil
	case op == OpReplace && streamMissing(err):
		// The stream holds nothing yet: sum gives the same result once;
		// later sends replace as usual.
		d.log.Info("CloudZero has no such stream yet for replace; creating it with sum", zap.String("stream", stream))
		return d.post(ctx, OpSum, stream, es)
	case (isBadRequest(err) || errors.Is(err, ErrTooLarge)) && len(es) > 1:
		d.cfg.Limiter.Refund(len(es)) // refused whole, nothing applied: the parts take their own
		return d.bisect(ctx, op, stream, es, err)
	case IsPermanent(err) || errors.Is(err, ErrTooLarge):
		d.cfg.Limiter.Refund(len(es))
		d.settle(ctx, stream, op, es, outcomeRefused, err)
		return nil
	default:
		d.cfg.Limiter.Refund(len(es)) // the budget counts what CloudZero confirmed
		d.settle(ctx, stream, op, es, outcomeFailed, err)
		return err
	}
}

// bisectionRequests bounds the requests one bisection makes in a round;
// it goes on in the next round, which comes at once (errBisectionGoesOn),
// so other streams, Consume and compactions are not held up meanwhile.
const bisectionRequests = 256

// errBisectionGoesOn: a bisection made its bisectionRequests requests and
// left records for the next round. Not a failure: no backoff.
var errBisectionGoesOn = errors.New("cloudzero: a bisection goes on in the next round")

// bisect finds the records CloudZero refuses in es, which it refused whole
// (400, or 413): es is split in halves, depth first, down to the records
// refused alone, which are dropped and counted; every other record is
// delivered. Nothing is dropped that CloudZero did not refuse alone: a
// stream CloudZero refuses entirely (an unknown filter key, a key set or
// granularity that differs from the stream's) costs about two requests per
// record, which the drop log and the bisected_requests metric show.
// Refused requests go back to the daily budget.
func (d *Delivery) bisect(ctx context.Context, op Op, stream string, es []sendEntry, first error) error {
	if isBadRequest(first) {
		if f := d.cfg.Observer.Bisected; f != nil {
			f(ctx, stream)
		}
		d.log.Debug("CloudZero refused a request; bisecting it to find the records it refuses",
			zap.String("stream", stream), zap.Int("records", len(es)), zap.Error(first))
	}
	stack := halves(nil, es) // parts still to send; the last is sent next
	failRest := func(err error) {
		if rest := flatten(stack); len(rest) > 0 {
			d.settle(ctx, stream, op, rest, outcomeFailed, err)
		}
	}
	for requests := 0; len(stack) > 0; requests++ {
		if requests >= bisectionRequests {
			failRest(errNotSent)
			return errBisectionGoesOn
		}
		part := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if err := d.cfg.Limiter.wait(ctx, len(part), false); err != nil {
			d.settle(ctx, stream, op, part, outcomeFailed, err)
			failRest(errNotSent)
			return err
		}
		err := d.request(ctx, op, stream, part)
		switch {
		case err == nil:
			d.settle(ctx, stream, op, part, outcomeAccepted, nil)
		case op == OpReplace && streamMissing(err):
			// The part's records are fine; the stream does not exist yet.
			if err := d.post(ctx, OpSum, stream, part); err != nil {
				failRest(errNotSent)
				return err
			}
		case (isBadRequest(err) || errors.Is(err, ErrTooLarge)) && len(part) > 1:
			d.cfg.Limiter.Refund(len(part))
			stack = halves(stack, part)
		case IsPermanent(err) || errors.Is(err, ErrTooLarge):
			d.cfg.Limiter.Refund(len(part))
			d.settle(ctx, stream, op, part, outcomeRefused, err)
		default:
			d.cfg.Limiter.Refund(len(part))
			d.settle(ctx, stream, op, part, outcomeFailed, err)
			failRest(errNotSent)
			return err
		}
	}
	return nil
}

// halves pushes the two halves of es on stack, the first half on top.
func halves(stack [][]sendEntry, es []sendEntry) [][]sendEntry {
	half := len(es) / 2
	return append(stack, es[half:], es[:half])
}

func flatten(stack [][]sendEntry) []sendEntry {
	var out []sendEntry
	for _, p := range stack {
		out = append(out, p...)
	}
	return out
}

// errNotSent marks records of a split request that were not sent because
// an earlier part failed, or are left for the next round: not ambiguous.
var errNotSent = errors.New("cloudzero: not sent: an earlier part of the request failed")

type outcome uint8

const (
	outcomeAccepted outcome = iota
	outcomeRefused
	outcomeFailed
)

// settle records the outcome of es in the ledger and the journal, and
// counts it.
func (d *Delivery) settle(ctx context.Context, stream string, op Op, es []sendEntry, o outcome, err error) {
	units := 0.0
	for _, e := range es {
		units += e.value
	}
	d.mu.Lock()
	typ := recConfirm
	for _, e := range es {
		if o == outcomeFailed {
			d.ledger.fail(e.id)
		} else {
			d.ledger.confirm(e.id)
		}
	}
	if o == outcomeFailed {
		typ = recFail
	} else if o == outcomeAccepted {
		d.accepted++
	}
	var jerr error
	if d.journal != nil {
		// Recorded even when ctx ended (the shutdown deadline): CloudZero
		// answered, and a lost confirmation would send the records again.
		jerr = d.journal.append(context.WithoutCancel(ctx), d.idsRecord(typ, 0, es))
	}
	d.mu.Unlock()
	if jerr != nil {
		d.log.Error("Writing a send's outcome to storage failed: after a restart these records are sent again (with sum, they may then count twice)",
			zap.String("stream", stream), zap.Int("records", len(es)), zap.Error(jerr))
	}
	if f := d.cfg.Observer.Settled; f != nil && o != outcomeFailed && (o == outcomeRefused || d.cfg.DryRun == nil) {
		keys := make([]record.Key, len(es))
		for i, e := range es {
			keys[i] = e.key
		}
		var refused error
		if o == outcomeRefused {
			refused = err
		}
		f(stream, op, keys, refused)
	}
	switch o {
	case outcomeAccepted:
		if f := d.cfg.Observer.Sent; f != nil && d.cfg.DryRun == nil {
			f(ctx, stream, op, len(es))
		}
	case outcomeRefused:
		reason := dropReason(err)
		d.cfg.Observer.dropped(ctx, stream, reason, len(es), units)
		d.drops.log(stream, reason, len(es), units, err)
	case outcomeFailed:
		if op == OpSum && mayHaveApplied(err) {
			d.cfg.Observer.ambiguous(ctx, stream, len(es), units)
		}
	}
}

// mayHaveApplied reports whether a failed request may nevertheless have
// been applied: any 5xx, or no answer (timeout, dropped connection).
func mayHaveApplied(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.StatusCode >= 500
	}
	var te *TransportError
	return errors.As(err, &te)
}

func isBadRequest(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusBadRequest
}

// streamMissing reports whether err is CloudZero's 400 "Telemetry stream
// must exist in order to update telemetry records" (replace on a new stream).
func streamMissing(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(se.Body), "must exist")
}

// writeDryRun writes "stream op body\n": the request as it would be sent
// (cloudzero replay sends such a file).
func (d *Delivery) writeDryRun(stream string, op Op, body []byte) error {
	line := make([]byte, 0, len(stream)+len(op)+len(body)+3)
	line = append(append(append(append(append(append(line, stream...), ' '), op...), ' '), body...), '\n')
	_, err := d.cfg.DryRun.Write(line)
	return err
}

// dropLog logs drops at most once per (stream, reason) per minute.
type dropLog struct {
	logger *zap.Logger
	mu     sync.Mutex
	seen   map[dropKey]*dropState
}

type dropKey struct{ stream, reason string }

type dropState struct {
	last              time.Time
	records           int
	units             float64
	suppressedRecords int
}

const dropLogEvery = time.Minute

func (l *dropLog) log(stream, reason string, records int, units float64, err error) {
	now := time.Now()
	l.mu.Lock()
	k := dropKey{stream, reason}
	st := l.seen[k]
	if st == nil {
		st = &dropState{}
		l.seen[k] = st
	}
	st.records += records
	st.units += units
	if !st.last.IsZero() && now.Sub(st.last) < dropLogEvery {
		st.suppressedRecords += records
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressedRecords
	st.last, st.suppressedRecords = now, 0
	totalRecords, totalUnits := st.records, st.units
	l.mu.Unlock()
	fields := []zap.Field{zap.String("stream", stream), zap.String("reason", reason), zap.Int("records", records),
		zap.Float64("units", units), zap.Int("records_dropped_since_start", totalRecords),
		zap.Float64("units_dropped_since_start", totalUnits), zap.Int("similar_drops_not_logged", suppressed)}
	if err != nil {
		fields = append(fields, zap.Error(err)) // safe: errors never hold the API key, bodies are cut short
	}
	l.logger.Warn("CloudZero records dropped", fields...)
}
