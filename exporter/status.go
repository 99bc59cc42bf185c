package exporter

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors that callers test with errors.Is.
var (
	// ErrTooLarge matches a *StatusError with status 413: the body must be
	// split. The Sender splits it; a single record that still gets 413 is
	// dropped (reason "status_413").
	ErrTooLarge = errors.New("cloudzero: request too large")
	// ErrInvalid wraps problems found before anything is sent (bad record,
	// empty stream name, unparsable endpoint). Permanent.
	ErrInvalid = errors.New("cloudzero: invalid request")
	// ErrBudgetExhausted matches a *BudgetError and a Limiter wait that was
	// cut short while the daily record budget was used up.
	ErrBudgetExhausted = errors.New("cloudzero: daily record budget exhausted")
)

const (
	maxErrorBody  = 512       // bytes of a response body kept in a StatusError
	maxRetryAfter = time.Hour // Retry-After values are clamped to this
	redacted      = "[REDACTED]"
)

// StatusError is a response with a status outside 2xx.
type StatusError struct {
	Op         Op
	Stream     string
	StatusCode int
	// Body is the start of the response body (at most ~512 bytes, valid
	// UTF-8), with the API key redacted should the server echo it.
	Body string
	// RetryAfter is the parsed Retry-After header (seconds or HTTP date),
	// clamped to [0, 1h]; 0 when absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("cloudzero: %s %q: HTTP %d", e.Op, e.Stream, e.StatusCode)
	if e.RetryAfter > 0 {
		s += " (retry after " + e.RetryAfter.String() + ")"
	}
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Is makes errors.Is(err, ErrTooLarge) true for a 413.
func (e *StatusError) Is(target error) bool {
	return target == ErrTooLarge && e.StatusCode == http.StatusRequestEntityTooLarge
}

func (e *StatusError) permanent() bool {
	c := e.StatusCode
	// 3xx left over after the http.Client's redirect handling means a wrong
	// endpoint; 4xx are the request's fault, except the retryable ones.
	return c >= 300 && c < 500 && c != http.StatusRequestTimeout &&
		c != http.StatusRequestEntityTooLarge && c != http.StatusTooManyRequests
}

// TransportError is a request that got no HTTP response: connection error,
// timeout, cancelled context. Always retryable; with sum, a request that
// timed out may nevertheless have been applied. Its message never holds the
// API key; Unwrap gives the cause (e.g. context.DeadlineExceeded).
type TransportError struct {
	Op      Op
	Stream  string
	msg     string
	err     error
	timeout bool
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("cloudzero: %s %q: %s", e.Op, e.Stream, e.msg)
}

func (e *TransportError) Unwrap() error { return e.err }

// Timeout reports whether the request timed out.
func (e *TransportError) Timeout() bool { return e.timeout }

// BudgetError is the Limiter's answer when the daily record budget is used
// up and the caller does not wait. It is a throttle: retry after
// RetryAfter (the time left until the next UTC midnight).
type BudgetError struct{ RetryAfter time.Duration }

func (e *BudgetError) Error() string {
	return ErrBudgetExhausted.Error() + "; resets in " + e.RetryAfter.Round(time.Second).String()
}

func (e *BudgetError) Is(target error) bool { return target == ErrBudgetExhausted }

// IsPermanent reports whether err must not be retried: 4xx other than
// 408/413/429 (and stray 3xx), or invalid input.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrInvalid) {
		return true
	}
	var se *StatusError
	return errors.As(err, &se) && se.permanent()
}

// RetryAfter returns the delay a throttle error asks for (0 = not stated:
// use normal backoff).
func RetryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	var be *BudgetError
	if errors.As(err, &be) {
		return be.RetryAfter
	}
	return 0
}

// statusClass is the request class reported to Observer.Request.
func statusClass(err error) string {
	var se *StatusError
	switch {
	case err == nil:
		return "2xx"
	case errors.As(err, &se):
		return strconv.Itoa(se.StatusCode/100) + "xx"
	default:
		return "transport"
	}
}

// dropReason names why a permanent failure dropped records.
func dropReason(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return "status_" + strconv.Itoa(se.StatusCode)
	}
	return "invalid"
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// redact removes every occurrence of key from s.
func redact(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, redacted)
}

// cutBody redacts key from a response body, then keeps at most maxErrorBody
// bytes of valid UTF-8. Redacting first means a key straddling the cut
// cannot leak half of itself (the caller reads maxErrorBody+len(key) bytes).
func cutBody(b []byte, key string) string {
	// The read may have stopped inside an occurrence of the key: drop the
	// partial key at the end, which redact cannot recognise.
	for i := min(len(key)-1, len(b)); i > 0; i-- {
		if strings.HasSuffix(string(b), key[:i]) {
			b = b[:len(b)-i]
			break
		}
	}
	s := redact(string(b), key)
	if len(s) > maxErrorBody {
		cut := maxErrorBody
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
}
