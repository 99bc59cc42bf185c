// Package exporter is the CloudZero allocation telemetry API client and the
// push path of the collector exporter: encoding records into request bodies
// (chunks), the client-side rate limit and daily budget, and sending with
// per-status handling. The Client is usable on its own by Go programs.
package exporter // import "github.com/cloudzero-otel/cloudzeroexporter/exporter"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// Op is an allocation telemetry operation: the last element of the URL path.
type Op string

const (
	OpSum     Op = "sum"     // add values to what is stored under each key
	OpReplace Op = "replace" // overwrite the value stored under each key
	OpDelete  Op = "delete"  // soft-delete what matches each selector
)

const apiPath = "/unit-cost/v1/telemetry/allocation/"

// Client posts to CloudZero's allocation telemetry API. It is safe for
// concurrent use. Each call is one request, all-or-nothing on the server:
// callers with large batches should split them (Delivery does: at most
// 10,000 records and 5 MB per request, one stream each).
type Client struct {
	hc        *http.Client
	base      string
	apiKey    string
	userAgent string
	now       func() time.Time // for Retry-After dates
}

// NewClient returns a client for the API at endpoint (base URL such as
// https://api.cloudzero.com; a trailing slash is tolerated). apiKey is sent
// as the raw Authorization header. A nil httpClient means http.DefaultClient
// (which has no timeout: give one a Timeout in production).
func NewClient(httpClient *http.Client, endpoint, apiKey string) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{hc: httpClient, base: strings.TrimRight(endpoint, "/"), apiKey: apiKey, userAgent: UserAgent(""), now: time.Now}
}

// SetUserAgent replaces the User-Agent header (UserAgent("") by default).
// Call it before the client is used. A User-Agent in confighttp's
// `headers:` still wins: that middleware runs after the client sets it.
func (c *Client) SetUserAgent(ua string) { c.userAgent = ua }

// Sum adds each record's value to what CloudZero stores under its key.
// Values must be finite and > 0. A request re-sent after it was applied
// counts twice.
func (c *Client) Sum(ctx context.Context, stream string, records []record.Record) error {
	return c.postRecords(ctx, OpSum, stream, records)
}

// Replace overwrites the value stored under each record's key (idempotent).
func (c *Client) Replace(ctx context.Context, stream string, records []record.Record) error {
	return c.postRecords(ctx, OpReplace, stream, records)
}

// DeleteSelector selects stored records to soft-delete: Timestamp and
// Granularity are required, ElementName and Filter narrow the selection.
type DeleteSelector struct {
	Timestamp   time.Time
	Granularity record.Granularity
	ElementName string // optional
	Filter      []record.Dimension
}

// Delete soft-deletes what matches each selector.
func (c *Client) Delete(ctx context.Context, stream string, selectors []DeleteSelector) error {
	if len(selectors) == 0 {
		return nil
	}
	b := append(make([]byte, 0, 256*len(selectors)), bodyPrefix...)
	for i, s := range selectors {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = appendSelector(b, s); err != nil {
			return fmt.Errorf("%w: selector %d: %w", ErrInvalid, i, err)
		}
	}
	return c.Post(ctx, OpDelete, stream, append(b, bodySuffix...))
}

func (c *Client) postRecords(ctx context.Context, op Op, stream string, records []record.Record) error {
	if len(records) == 0 {
		return nil
	}
	b := append(make([]byte, 0, 256*len(records)), bodyPrefix...)
	for i, r := range records {
		if err := record.ValidValue(r.Value); err != nil {
			return fmt.Errorf("%w: record %d: %w", ErrInvalid, i, err)
		}
		if i > 0 {
			b = append(b, ',')
		}
		r.Filter = cloneFilter(r.Filter) // record.AppendKey sorts in place: keep the caller's slices intact
		var err error
		if b, err = record.AppendKey(b, r); err != nil {
			return fmt.Errorf("%w: record %d: %w", ErrInvalid, i, err)
		}
		b = append(b, '"')
		b = record.AppendValue(b, r.Value)
		b = append(b, '"', '}')
	}
	return c.Post(ctx, op, stream, append(b, bodySuffix...))
}

// Post sends one request body ({"records":[...]}) for op on stream. Any 2xx
// is success (the body is not parsed). Other statuses give a *StatusError;
// failures without a response give a *TransportError. Neither ever contains
// the API key.
func (c *Client) Post(ctx context.Context, op Op, stream string, body []byte) error {
	if stream == "" || stream == "." || stream == ".." {
		return fmt.Errorf("%w: stream name %q", ErrInvalid, stream)
	}
	u := c.base + apiPath + url.PathEscape(stream) + "/" + string(op)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %s", ErrInvalid, redact(err.Error(), c.apiKey))
	}
	req.Header.Set("Authorization", c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)

	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(op, stream, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, int64(maxErrorBody+len(c.apiKey))))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return &StatusError{
		Op:         op,
		Stream:     stream,
		StatusCode: resp.StatusCode,
		Body:       cutBody(head, c.apiKey),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now()),
	}
}

func (c *Client) transportError(op Op, stream string, err error) error {
	te := &TransportError{Op: op, Stream: stream, err: err}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The *url.Error repeats the URL; keep the operation and the cause.
		te.err = ue.Err
		te.timeout = ue.Timeout()
		te.msg = ue.Op + ": " + ue.Err.Error()
	} else {
		te.msg = err.Error()
	}
	te.msg = redact(te.msg, c.apiKey)
	return te
}

func cloneFilter(f []record.Dimension) []record.Dimension {
	if len(f) == 0 {
		return nil
	}
	out := make([]record.Dimension, len(f))
	for i, d := range f {
		out[i] = record.Dimension{Key: d.Key, Values: slices.Clone(d.Values)}
	}
	return out
}

// appendSelector encodes a delete selector: the record JSON without value,
// element_name and filter only when given.
func appendSelector(b []byte, s DeleteSelector) ([]byte, error) {
	if !s.Granularity.Valid() {
		return b, record.ErrBadGranularity
	}
	if s.Timestamp.IsZero() {
		return b, errors.New("timestamp required")
	}
	if len(s.Filter) > record.MaxFilterKeys {
		return b, record.ErrTooManyKeys
	}
	f := cloneFilter(s.Filter)
	slices.SortFunc(f, func(a, b record.Dimension) int { return strings.Compare(a.Key, b.Key) })
	b = append(b, `{"timestamp":"`...)
	b = s.Timestamp.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `","granularity":"`...)
	b = append(b, s.Granularity...)
	b = append(b, '"')
	if s.ElementName != "" {
		b = append(b, `,"element_name":`...)
		b = record.AppendJSONString(b, s.ElementName)
	}
	if len(f) > 0 {
		b = append(b, `,"filter":{`...)
		for i, d := range f {
			if d.Key == "" || len(d.Values) == 0 {
				return b, record.ErrEmptyFilterKey
			}
			if i > 0 && f[i-1].Key == d.Key {
				return b, record.ErrDuplicateFilter
			}
			slices.Sort(d.Values)
			values := slices.Compact(d.Values)
			if len(values) > record.MaxValuesPerKey {
				return b, record.ErrTooManyValues
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = record.AppendJSONString(b, d.Key)
			b = append(b, ":["...)
			for j, v := range values {
				if j > 0 {
					b = append(b, ',')
				}
				b = record.AppendJSONString(b, v)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}
