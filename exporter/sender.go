package exporter

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// BudgetPolicy says what Send does when the daily budget is used up.
type BudgetPolicy int

const (
	// BudgetWait blocks in Send until the next UTC day (bounded by ctx).
	BudgetWait BudgetPolicy = iota
	// BudgetReturn makes Send return the unsent records and a *BudgetError
	// (a throttle whose RetryAfter is the time to the next UTC midnight).
	BudgetReturn
)

// Observer receives the Sender's counts, to publish as metrics. Nil fields
// are skipped. Calls may come from several goroutines at once.
type Observer struct {
	// Sent: records and body bytes accepted by CloudZero (2xx).
	Sent func(ctx context.Context, stream string, records, bytes int)
	// DryRun: records and bytes written to the dry-run writer (not sent).
	DryRun func(ctx context.Context, stream string, records, bytes int)
	// Dropped: records dropped for good. Reasons: "invalid_value" (not a
	// finite number > 0), "status_<code>" (permanent HTTP status, or 413 on
	// a single record), "invalid" (rejected before sending).
	Dropped func(ctx context.Context, stream, reason string, records int)
	// Request: one per HTTP request, class "2xx", "3xx", "4xx", "5xx" or
	// "transport".
	Request func(ctx context.Context, stream, class string)
}

// SenderConfig configures a Sender; the zero value is usable.
type SenderConfig struct {
	Chunker  Chunker  // request limits; zero = defaults
	Limiter  *Limiter // nil = no client-side limit
	Budget   BudgetPolicy
	Logger   *zap.Logger // nil = no logs
	Observer Observer
	// DryRun, if set, receives each request body instead of CloudZero: one
	// line per request, the stream name, a space, the JSON body. The
	// limiter is not used; the client may be nil.
	DryRun io.Writer
}

// Sender is the push path: it sends a record.Set to the sum endpoint in
// chunks, under the rate limit, handling each status as the API doc says.
// It holds no per-request state and is safe for concurrent use.
type Sender struct {
	client *Client
	cfg    SenderConfig
	log    *zap.Logger
	dryMu  sync.Mutex

	logMu   sync.Mutex
	logSeen map[logKey]*logState
}

type logKey struct{ reason, stream string }

type logState struct {
	last       time.Time
	suppressed int
}

// permanentLogEvery is how often one (reason, stream) permanent failure is logged.
const permanentLogEvery = time.Minute

// NewSender returns a Sender posting through client.
func NewSender(client *Client, cfg SenderConfig) *Sender {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Sender{client: client, cfg: cfg, log: log, logSeen: map[logKey]*logState{}}
}

// Send posts every record of set to the sum endpoint: streams in sorted
// order, keys sorted, chunks within the limits, each after waiting on the
// limiter. It does not modify set.
//
//   - 413: the chunk is split in halves, recursively; a single record that
//     still gets 413 is dropped.
//   - Permanent failure (4xx but 408/413/429, invalid): that chunk is dropped,
//     counted and logged, and the others are still sent.
//   - Retryable failure (429, 503, other 5xx, 408, transport, ctx done while
//     waiting, budget with BudgetReturn): Send stops and returns the records
//     not yet accepted (the failed chunk and everything after it) as a new
//     set, with the error. Retry with that set only.
//
// When everything left was handled and some records were dropped, err is a
// *DropError (IsPermanent) and unsent is nil.
func (s *Sender) Send(ctx context.Context, set *record.Set) (unsent *record.Set, err error) {
	if set.Len() == 0 {
		return nil, nil
	}
	bufp := bufPool.Get().(*[]byte)
	entp := entriesPool.Get().(*[]Entry)
	defer func() {
		clear(*entp) // drop key references before pooling
		*entp = (*entp)[:0]
		entriesPool.Put(entp)
		bufPool.Put(bufp)
	}()

	var st sendState
	// A batch that fits in a day's budget takes it all before its first
	// chunk: then it is never left half sent waiting for the next day (a
	// half-sent batch interrupted by a shutdown is replayed whole).
	if total := set.Len(); s.cfg.DryRun == nil && s.cfg.Limiter.reservable(total) {
		if err := s.cfg.Limiter.waitBudget(ctx, total, s.cfg.Budget == BudgetWait); err != nil {
			return set, err
		}
		st.reserved = total
		defer func() { s.cfg.Limiter.Refund(st.reserved - st.taken) }()
	}
	streams := set.Streams()
	for i, stream := range streams {
		entries, skipped := SortedEntries((*entp)[:0], set.Records(stream))
		*entp = entries
		st.total += len(entries) + skipped
		if skipped > 0 {
			st.dropped += skipped
			s.dropped(ctx, stream, "invalid_value", skipped, nil)
		}
		for pos := 0; pos < len(entries); {
			done, err := s.sendChunk(ctx, stream, entries[pos:], bufp, &st)
			pos += done
			if err != nil {
				return unsentSet(set, streams[i+1:], stream, entries[pos:]), err
			}
		}
	}
	if st.dropped > 0 {
		return nil, &DropError{Dropped: st.dropped, Total: st.total, Err: st.firstErr}
	}
	return nil, nil
}

type sendState struct {
	total, dropped int
	firstErr       error
	// reserved records of the daily budget taken for the whole batch;
	// taken of them handed to requests (the rest is refunded at the end).
	reserved, taken int
}

// sendChunk sends the next chunk of entries; it returns how many leading
// entries are finished (accepted or dropped) and a retryable error, if any.
func (s *Sender) sendChunk(ctx context.Context, stream string, entries []Entry, bufp *[]byte, st *sendState) (int, error) {
	maxRecords := s.cfg.Limiter.MaxChunk()
	if left, limited := s.cfg.Limiter.BudgetLeft(); st.reserved == 0 && limited && left > 0 && (maxRecords == 0 || left < maxRecords) {
		maxRecords = left // use up today's budget rather than wait for a day with room for a full chunk
	}
	body, n := s.cfg.Chunker.Encode((*bufp)[:0], entries, maxRecords)
	*bufp = body

	if s.cfg.DryRun != nil {
		if err := s.writeDryRun(stream, body); err != nil {
			return 0, err
		}
		if f := s.cfg.Observer.DryRun; f != nil {
			f(ctx, stream, n, len(body))
		}
		return n, nil
	}
	if st.reserved > 0 {
		if err := s.cfg.Limiter.waitRate(ctx, n); err != nil {
			return 0, err
		}
		st.taken += n // from here on, refunds are per request (see post)
	} else if err := s.cfg.Limiter.wait(ctx, n, s.cfg.Budget == BudgetWait); err != nil {
		return 0, err
	}
	return s.post(ctx, stream, entries[:n], body, bufp, st)
}

// post sends entries, already encoded in body, splitting on 413. Same
// results as sendChunk.
func (s *Sender) post(ctx context.Context, stream string, entries []Entry, body []byte, bufp *[]byte, st *sendState) (int, error) {
	err := s.client.Post(ctx, OpSum, stream, body)
	if f := s.cfg.Observer.Request; f != nil && !errors.Is(err, ErrInvalid) {
		f(ctx, stream, statusClass(err))
	}
	switch {
	case err == nil:
		if f := s.cfg.Observer.Sent; f != nil {
			f(ctx, stream, len(entries), len(body))
		}
		return len(entries), nil
	case errors.Is(err, ErrTooLarge) && len(entries) > 1:
		s.log.Debug("CloudZero refused a request as too large; splitting it",
			zap.String("stream", stream), zap.Int("records", len(entries)), zap.Int("bytes", len(body)))
		done := 0
		half := len(entries) / 2
		for _, part := range [][]Entry{entries[:half], entries[half:]} {
			*bufp = AppendBody((*bufp)[:0], part) // body is no longer needed: reuse the buffer
			d, err := s.post(ctx, stream, part, *bufp, bufp, st)
			done += d
			if err != nil {
				return done, err
			}
		}
		return done, nil
	case IsPermanent(err) || errors.Is(err, ErrTooLarge):
		s.cfg.Limiter.Refund(len(entries))
		st.dropped += len(entries)
		if st.firstErr == nil {
			st.firstErr = err
		}
		s.dropped(ctx, stream, dropReason(err), len(entries), err)
		return len(entries), nil
	default:
		if notApplied(err) {
			s.cfg.Limiter.Refund(len(entries))
		}
		s.log.Debug("CloudZero request failed; will be retried",
			zap.String("stream", stream), zap.Int("records", len(entries)), zap.Error(err))
		return 0, err
	}
}

// notApplied reports whether a failed request certainly changed nothing at
// CloudZero (so its records go back to the daily budget): 429, 503 and 408
// refuse the request. Other 5xx and transport errors may have been applied.
func notApplied(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.StatusCode == http.StatusTooManyRequests ||
		se.StatusCode == http.StatusServiceUnavailable || se.StatusCode == http.StatusRequestTimeout)
}

func (s *Sender) writeDryRun(stream string, body []byte) error {
	s.dryMu.Lock()
	defer s.dryMu.Unlock()
	line := make([]byte, 0, len(stream)+len(body)+2)
	line = append(append(append(append(line, stream...), ' '), body...), '\n')
	_, err := s.cfg.DryRun.Write(line)
	return err
}

// dropped counts a drop and logs it, at most once per (reason, stream) per
// minute. err's text is safe to log: it never holds the API key, and
// response bodies are cut short.
func (s *Sender) dropped(ctx context.Context, stream, reason string, n int, err error) {
	if f := s.cfg.Observer.Dropped; f != nil {
		f(ctx, stream, reason, n)
	}
	k := logKey{reason, stream}
	now := time.Now()
	s.logMu.Lock()
	ls := s.logSeen[k]
	if ls == nil {
		ls = &logState{}
		s.logSeen[k] = ls
	}
	if !ls.last.IsZero() && now.Sub(ls.last) < permanentLogEvery {
		ls.suppressed++
		s.logMu.Unlock()
		return
	}
	suppressed := ls.suppressed
	ls.last, ls.suppressed = now, 0
	s.logMu.Unlock()

	fields := []zap.Field{zap.String("stream", stream), zap.String("reason", reason),
		zap.Int("records", n), zap.Int("similar_drops_not_logged", suppressed)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	s.log.Warn("CloudZero records dropped", fields...)
}

// unsentSet builds the set left to retry: rest of the current stream and
// every later stream.
func unsentSet(set *record.Set, later []string, stream string, rest []Entry) *record.Set {
	u := record.NewSet()
	for _, e := range rest {
		u.Add(stream, e.Key, e.Value)
	}
	for _, st := range later {
		for k, v := range set.Records(st) {
			u.Add(st, k, v)
		}
	}
	return u
}
