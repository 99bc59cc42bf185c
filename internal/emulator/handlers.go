package emulator

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Route names, as counted in Ledger.RequestsByRoute.
const (
	RouteSum           = "sum"                   // /unit-cost/v1/telemetry/allocation/{stream}/sum
	RouteReplace       = "replace"               // .../{stream}/replace
	RouteDelete        = "delete"                // .../{stream}/delete
	RouteDeprecatedSum = "allocation_deprecated" // /unit-cost/v1/telemetry/allocation/{stream} (= sum)
	RouteLegacy        = "telemetry_legacy"      // /unit-cost/v1/telemetry (stream per record)
	RouteUnknown       = "unknown"               // anything else under /unit-cost/
)

// Defaults.
const (
	DefaultMaxFutureSkew = time.Minute
	DefaultRecentErrors  = 50
	apiPrefix            = "/unit-cost/"
	legacyPath           = "/unit-cost/v1/telemetry"
	allocationPrefix     = "/unit-cost/v1/telemetry/allocation/"
	maxAdminBody         = 1 << 20
)

// Config configures a Server.
type Config struct {
	// APIKey is the only accepted Authorization header value (required).
	APIKey string
	// MaxFutureSkew is how far past now a timestamp may be. 0 means
	// DefaultMaxFutureSkew (1 minute); a negative value means no tolerance.
	MaxFutureSkew time.Duration
	// MaxBodyBytes is the request size limit (0: DefaultMaxBodyBytes, 5,000,000).
	MaxBodyBytes int64
	// MaxRecordBytes is the record size limit (0: DefaultMaxRecordBytes, 10,000).
	MaxRecordBytes int
	// ReplaceRequiresStream makes replace on a missing stream a 400, the stricter
	// reading of cloudzero-api.md (default: replace creates the stream).
	ReplaceRequiresStream bool
	// ExtraFilterKeys are accepted as built-in filter keys besides BuiltinFilterKeys.
	ExtraFilterKeys []string
	// Limits is the initial rate limiting (zero: none).
	Limits Limits
	// Faults is the initial fault sequence.
	Faults FaultConfig
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger gets one line per API request (nil: no log). The API key is never logged.
	Logger *log.Logger
	// RecentErrors is how many errors the ledger keeps (0: DefaultRecentErrors).
	RecentErrors int
}

// Server is the emulator: an http.Handler serving the API routes, the admin routes
// under /emulator/ and the page at /.
type Server struct {
	cfg        Config
	filterKeys map[string]bool
	admin      *http.ServeMux

	mu      sync.Mutex // guards everything below
	store   *store
	st      stats
	faults  faults
	limits  Limits
	limiter limiter

	closeOnce sync.Once
	closing   chan struct{}
}

type stats struct {
	byStatus        map[int]int64
	byRoute         map[string]map[int]int64
	recordsAccepted int64
	recordsByRoute  map[string]int64
	entriesDeleted  int64
	unaligned       int64
	nonCanonical    int64
	over15          int64
	ambiguousReq    int64
	ambiguousRec    int64
	ambiguousUnits  big.Rat // sum of the values of sum records in ambiguous requests
	abandonedReq    int64
	abandonedRec    int64
	injected        map[int]int64
	reasons         map[string]int64
	recent          []ErrorEntry
}

func newStats() stats {
	return stats{byStatus: map[int]int64{}, byRoute: map[string]map[int]int64{}, recordsByRoute: map[string]int64{},
		injected: map[int]int64{}, reasons: map[string]int64{}}
}

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("emulator: an API key is required")
	}
	if cfg.MaxFutureSkew == 0 {
		cfg.MaxFutureSkew = DefaultMaxFutureSkew
	} else if cfg.MaxFutureSkew < 0 {
		cfg.MaxFutureSkew = 0
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RecentErrors <= 0 {
		cfg.RecentErrors = DefaultRecentErrors
	}
	if err := cfg.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("emulator: faults: %w", err)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	s := &Server{cfg: cfg, filterKeys: map[string]bool{}, store: newStore(), st: newStats(),
		limits: cfg.Limits, closing: make(chan struct{})}
	for _, k := range append(append([]string{}, BuiltinFilterKeys...), cfg.ExtraFilterKeys...) {
		s.filterKeys[k] = true
	}
	s.faults.set(cfg.Faults)
	s.limiter.set(cfg.Limits, cfg.Now())

	s.admin = http.NewServeMux()
	s.admin.HandleFunc("GET /{$}", s.servePage)
	s.admin.HandleFunc("GET /emulator/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.admin.HandleFunc("GET /emulator/ledger", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Ledger())
	})
	s.admin.HandleFunc("POST /emulator/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]string{"message": "reset"})
	})
	s.admin.HandleFunc("GET /emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	s.admin.HandleFunc("POST /emulator/faults", func(w http.ResponseWriter, r *http.Request) {
		var c FaultConfig
		if err := decodeAdmin(r, &c); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		if err := s.SetFaults(c); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s.Faults())
	})
	s.admin.HandleFunc("DELETE /emulator/faults", func(w http.ResponseWriter, _ *http.Request) {
		_ = s.SetFaults(FaultConfig{})
		writeJSON(w, http.StatusOK, s.Faults())
	})
	s.admin.HandleFunc("GET /emulator/limits", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Limits())
	})
	s.admin.HandleFunc("POST /emulator/limits", func(w http.ResponseWriter, r *http.Request) {
		var l Limits
		if err := decodeAdmin(r, &l); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		if err := s.SetLimits(l); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s.Limits())
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, apiPrefix) {
		s.serveAPI(w, r)
		return
	}
	s.admin.ServeHTTP(w, r)
}

// Close makes pending injected delays end at once. The server still answers.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closing) }) }

// Reset clears the streams, the ledger counters and the fault sequence, and refills
// the rate limiter. The API key and the limits stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store = newStore()
	s.st = newStats()
	s.faults.set(FaultConfig{})
	s.limiter.set(s.limits, s.cfg.Now())
}

// SetFaults replaces the fault sequence.
func (s *Server) SetFaults(c FaultConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.set(c)
	return nil
}

// Faults returns the fault sequence and its position.
func (s *Server) Faults() FaultState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.state()
}

// SetLimits replaces the rate limits (and refills the bucket).
func (s *Server) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = l
	s.limiter.set(l, s.cfg.Now())
	return nil
}

// Limits returns the rate limits.
func (s *Server) Limits() Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// Ledger returns a snapshot of what was accepted and answered.
func (s *Server) Ledger() Ledger {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	l := Ledger{
		Streams:                  s.store.snapshot(),
		RequestsByStatus:         statusMap(st.byStatus),
		RequestsByRoute:          map[string]map[string]int64{},
		RecordsAccepted:          st.recordsAccepted,
		RecordsAcceptedByRoute:   map[string]int64{},
		EntriesDeleted:           st.entriesDeleted,
		UnalignedRecords:         st.unaligned,
		NonCanonicalTimestamps:   st.nonCanonical,
		ValuesOver15Digits:       st.over15,
		AmbiguousAppliedRequests: st.ambiguousReq,
		AmbiguousAppliedRecords:  st.ambiguousRec,
		AmbiguousAppliedUnits:    FormatDecimal(&st.ambiguousUnits),
		AbandonedAppliedRequests: st.abandonedReq,
		AbandonedAppliedRecords:  st.abandonedRec,
		InjectedFaults:           statusMap(st.injected),
		RejectionsByReason:       map[string]int64{},
		RecentErrors:             append([]ErrorEntry{}, st.recent...),
	}
	for route, m := range st.byRoute {
		l.RequestsByRoute[route] = statusMap(m)
	}
	for k, v := range st.recordsByRoute {
		l.RecordsAcceptedByRoute[k] = v
	}
	for k, v := range st.reasons {
		l.RejectionsByReason[k] = v
	}
	return l
}

func statusMap(m map[int]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[strconv.Itoa(k)] = v
	}
	return out
}

// ---- API -------------------------------------------------------------------

type route struct {
	name      string
	op        Operation
	legacy    bool
	stream    string
	streamErr *apiError
}

func parseRoute(u *url.URL) route {
	p := u.EscapedPath()
	if p == legacyPath {
		return route{name: RouteLegacy, op: OpSum, legacy: true}
	}
	if !strings.HasPrefix(p, allocationPrefix) {
		return route{name: RouteUnknown}
	}
	parts := strings.Split(p[len(allocationPrefix):], "/")
	var rt route
	switch {
	case len(parts) == 1:
		rt = route{name: RouteDeprecatedSum, op: OpSum}
	case len(parts) == 2 && parts[1] == "sum":
		rt = route{name: RouteSum, op: OpSum}
	case len(parts) == 2 && parts[1] == "replace":
		rt = route{name: RouteReplace, op: OpReplace}
	case len(parts) == 2 && parts[1] == "delete":
		rt = route{name: RouteDelete, op: OpDelete}
	default:
		return route{name: RouteUnknown}
	}
	stream, err := url.PathUnescape(parts[0])
	if err != nil || !streamNameRE.MatchString(stream) {
		rt.streamErr = badRequest(ReasonStreamName, "stream name %q: 1 to 256 letters, digits, '_', '.', '-'", parts[0])
	}
	rt.stream = stream
	return rt
}

// response is what the API answers, plus what the ledger needs to know.
type response struct {
	status     int
	err        *apiError
	retryAfter *int
	records    int           // records in the request, when it was parsed
	units      big.Rat       // sum of the records' values (sum route), when applied
	applied    bool          // the records were stored
	delay      time.Duration // injected delay before answering
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	rt := parseRoute(r.URL)
	res := s.handleAPI(w, r, rt)

	if res.delay > 0 {
		t := time.NewTimer(res.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		case <-s.closing:
			t.Stop()
		}
	}
	gone := r.Context().Err() != nil

	s.mu.Lock()
	st := &s.st
	st.byStatus[res.status]++
	if st.byRoute[rt.name] == nil {
		st.byRoute[rt.name] = map[int]int64{}
	}
	st.byRoute[rt.name][res.status]++
	if gone && res.applied {
		st.abandonedReq++
		st.abandonedRec += int64(res.records)
	}
	if res.err != nil {
		st.reasons[res.err.reason]++
		st.recent = append(st.recent, ErrorEntry{Time: s.cfg.Now().UTC().Format(time.RFC3339Nano), Route: rt.name,
			Stream: rt.stream, Status: res.status, Reason: res.err.reason, Message: res.err.message})
		if over := len(st.recent) - s.cfg.RecentErrors; over > 0 {
			st.recent = append([]ErrorEntry{}, st.recent[over:]...)
		}
	}
	s.mu.Unlock()

	if s.cfg.Logger != nil {
		reason := ""
		if res.err != nil {
			reason = " reason=" + res.err.reason
		}
		// Never log headers: the Authorization header is the API key.
		s.cfg.Logger.Printf("%s %s -> %d records=%d%s", r.Method, r.URL.Path, res.status, res.records, reason)
	}

	if res.retryAfter != nil {
		w.Header().Set("Retry-After", strconv.Itoa(*res.retryAfter))
	}
	if res.err != nil {
		writeJSON(w, res.status, map[string]string{"message": res.err.message, "reason": res.err.reason})
		return
	}
	writeJSON(w, res.status, map[string]any{"message": "OK", "records": res.records})
}

func errorResponse(e *apiError) response { return response{status: e.status, err: e} }

func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request, rt route) response {
	if rt.name == RouteUnknown {
		return errorResponse(&apiError{status: http.StatusNotFound, reason: ReasonNotFound, message: "no such route"})
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return errorResponse(&apiError{status: http.StatusMethodNotAllowed, reason: ReasonMethodNotAllowed, message: "use POST"})
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.cfg.APIKey)) != 1 {
		return errorResponse(&apiError{status: http.StatusForbidden, reason: ReasonAuth,
			message: "Not authorized: send the API key as the raw value of the Authorization header"})
	}

	s.mu.Lock()
	step, hasStep := s.faults.next()
	if hasStep && step.Status != 0 && !step.Apply {
		s.st.injected[step.Status]++
	}
	s.mu.Unlock()
	delay := time.Duration(step.DelayMS) * time.Millisecond

	if hasStep && step.Status != 0 && !step.Apply {
		return response{status: step.Status, retryAfter: step.RetryAfterSeconds, delay: delay,
			err: &apiError{status: step.Status, reason: ReasonInjected, message: fmt.Sprintf("injected %d", step.Status)}}
	}

	res := s.handleRecords(w, r, rt)
	res.delay = delay
	if hasStep && step.Apply && res.applied {
		s.mu.Lock()
		s.st.injected[step.Status]++
		s.st.ambiguousReq++
		s.st.ambiguousRec += int64(res.records)
		s.st.ambiguousUnits.Add(&s.st.ambiguousUnits, &res.units)
		s.mu.Unlock()
		res.status, res.retryAfter = step.Status, step.RetryAfterSeconds
		res.err = &apiError{status: step.Status, reason: ReasonInjected,
			message: fmt.Sprintf("injected %d (the request WAS applied)", step.Status)}
	}
	return res
}

// handleRecords reads, validates and applies a request's records.
func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request, rt route) response {
	if rt.streamErr != nil {
		return errorResponse(rt.streamErr)
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return errorResponse(badRequest(ReasonContentType, "Content-Type must be application/json"))
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return errorResponse(badRequest(ReasonContentEncoding, "Content-Encoding %q is not supported: send uncompressed JSON", ce))
	}
	tooLarge := &apiError{status: http.StatusRequestEntityTooLarge, reason: ReasonBodyTooLarge,
		message: fmt.Sprintf("request body over %d bytes", s.cfg.MaxBodyBytes)}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return errorResponse(tooLarge)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorResponse(tooLarge)
		}
		return errorResponse(badRequest(ReasonClientGoneOrClosed, "reading the body: %v", err))
	}

	now := s.cfg.Now()
	recs, perr := parseBody(body, parseOptions{op: rt.op, legacy: rt.legacy, stream: rt.stream,
		maxRecordBytes: s.cfg.MaxRecordBytes, now: now, maxFutureSkew: s.cfg.MaxFutureSkew, filterKeys: s.filterKeys})
	if perr != nil {
		return errorResponse(perr)
	}
	res := response{records: len(recs)}

	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.store.check(rt.op, recs, s.cfg.ReplaceRequiresStream); e != nil {
		res.status, res.err = e.status, e
		return res
	}
	if ok, reason, wait := s.limiter.take(len(recs), now); !ok {
		ra := retryAfterSeconds(wait)
		res.status, res.retryAfter = http.StatusTooManyRequests, &ra
		res.err = &apiError{status: http.StatusTooManyRequests, reason: reason,
			message: fmt.Sprintf("Rate limit exceeded (%s): retry after %d s", reason, ra)}
		return res
	}
	deleted := s.store.apply(rt.op, recs)
	res.applied = true
	res.status = http.StatusOK
	if rt.op == OpDelete {
		res.status = http.StatusCreated
	}
	if rt.op == OpSum {
		for _, rec := range recs {
			res.units.Add(&res.units, rec.value)
		}
	}
	st := &s.st
	st.recordsAccepted += int64(len(recs))
	st.recordsByRoute[rt.name] += int64(len(recs))
	st.entriesDeleted += deleted
	if rt.op != OpDelete {
		for _, rec := range recs {
			if rec.unaligned {
				st.unaligned++
			}
			if rec.nonCanonical {
				st.nonCanonical++
			}
			if rec.over15Digits {
				st.over15++
			}
		}
	}
	return res
}

// ---- helpers ---------------------------------------------------------------

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func decodeAdmin(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	return nil
}

// ---- running as a process or in-process -------------------------------------

// Instance is a Server listening on a TCP address.
type Instance struct {
	*Server
	// URL is the base URL, e.g. http://127.0.0.1:8089.
	URL  string
	Addr net.Addr

	http     *http.Server
	done     chan struct{} // closed when Serve has returned
	serveErr error
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves a new Server in the
// background. Stop it with Shutdown.
func Start(addr string, cfg Config) (*Instance, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: cfg.Logger}
	in := &Instance{Server: s, URL: "http://" + ln.Addr().String(), Addr: ln.Addr(), http: hs, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			in.serveErr = err
		}
	}()
	return in, nil
}

// Shutdown ends pending delays, stops accepting requests and waits (bounded by
// ctx) for the ones in flight; connections still open when ctx ends are closed.
func (in *Instance) Shutdown(ctx context.Context) error {
	in.Close()
	err := in.http.Shutdown(ctx)
	if err != nil {
		_ = in.http.Close()
	}
	<-in.done
	if err == nil {
		err = in.serveErr
	}
	return err
}
