package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

const deleteExample = `  # A bad deploy sent wrong usage on 2026-11-02 between 13:00 and 18:00 UTC; see what goes, then delete:
  cloudzero delete --stream api-requests --from 2026-11-02T13:00:00Z --to 2026-11-02T18:00:00Z
  CLOUDZERO_API_KEY=... cloudzero delete --stream api-requests --from 2026-11-02T13:00:00Z --to 2026-11-02T18:00:00Z --yes

  Buckets whose start is in [--from, --to) are deleted, each with one selector; --element and
  --filter narrow what is deleted in each (a record matches a --filter key when its values are
  among the given ones: --filter custom:feature=search|export, as in send's CSV, or the flag
  repeated). A --to in the future is fine: the range stops at the current bucket, since CloudZero
  refuses future timestamps. Each bucket counts as a record against --records-per-day.`

// maxDeleteBuckets bounds one run: ten years of hours.
const maxDeleteBuckets = 24 * 366 * 10

// selectorsPerRequest: delete selectors per request at most, each counted
// as a record by the rate limiter.
const selectorsPerRequest = 1000

// maxDeleteBytes keeps a delete body under CloudZero's 5 MB, as the
// exporter's sender does its requests (exporter/encode.go defaultMaxBytes:
// 5 MiB - 256 KiB, under 5 MB whether that means 5,000,000 bytes or 5 MiB).
const maxDeleteBytes = 5*1024*1024 - 256*1024

type filterFlag map[string][]string

func (f filterFlag) String() string { return fmt.Sprint(map[string][]string(f)) }

// Set takes key=value, several values split by "|" as in send's CSV.
func (f filterFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" || v == "" {
		return errors.New("want key=value, e.g. custom:feature=search or custom:feature=search|export")
	}
	if msg := record.FilterKeyProblem(k); msg != "" {
		return fmt.Errorf("key %q %s", k, msg)
	}
	vals := strings.Split(v, "|")
	if slices.Contains(vals, "") {
		return fmt.Errorf("key %q: an empty value (a \"|\" with nothing on one side)", k)
	}
	f[k] = append(f[k], vals...)
	return nil
}

func runDelete(ctx context.Context, args []string, e env) int {
	var sf sendFlags
	fs := newFlags("delete", "--stream S --from T --to T [--granularity G] [--element E] [--filter k=v]... [--yes]", deleteExample, e)
	sf.register(fs)
	stream := fs.String("stream", "", "CloudZero stream (required)")
	from := fs.String("from", "", "first bucket: RFC 3339 or a date; moved to its bucket start (required)")
	to := fs.String("to", "", "end of the range, exclusive: RFC 3339 or a date (required); in the future, the range stops at the current bucket")
	gran := fs.String("granularity", "HOURLY", "granularity of the stream: HOURLY or DAILY")
	element := fs.String("element", "", "delete only this element's records")
	filter := filterFlag{}
	fs.Var(filter, "filter", "delete only records within this filter value (key=value, or key=a|b; repeatable; values of one key are OR-ed)")
	rest, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	apply, ok := sf.apply(fs, e)
	if !ok {
		return exitUsage
	}
	g := record.Granularity(strings.ToUpper(*gran))
	if len(rest) > 0 {
		return usageError(e, fs, "delete takes no file arguments")
	}
	if err := record.ValidStreamName(*stream); err != nil {
		return usageError(e, fs, fmt.Sprintf("--stream %q: %v", *stream, err))
	}
	if !g.Valid() {
		return usageError(e, fs, "--granularity must be HOURLY or DAILY")
	}
	start, err1 := parseTime(*from, true)
	end, err2 := parseTime(*to, true)
	if err := errors.Join(prefix("--from", err1), prefix("--to", err2)); err != nil {
		return usageError(e, fs, err.Error())
	}
	start = g.Truncate(start)
	if !start.Before(end) {
		return usageError(e, fs, "--to must be after --from's bucket start: the range is [from, to)")
	}
	// CloudZero refuses future timestamps, and a request is all or
	// nothing: the range stops at the current bucket (its start is past).
	current := g.Truncate(e.now())
	if start.After(current) {
		return usageError(e, fs, fmt.Sprintf("the range starts in the future (the current bucket is %s): CloudZero holds nothing there", current.Format(time.RFC3339)))
	}
	future := end.After(current.Add(g.Duration()))
	if future {
		end = current.Add(g.Duration())
	}
	var dims []record.Dimension
	for k, v := range filter {
		dims = append(dims, record.Dimension{Key: k, Values: v})
	}
	// The selector's element and filter follow the record rules.
	selKey, err := record.NewKey(record.Record{Timestamp: start, Granularity: g, ElementName: orAny(*element), Filter: dims})
	if err != nil {
		return usageError(e, fs, fmt.Sprintf("--element/--filter: %v", err))
	}
	var sels []czexporter.DeleteSelector
	for ts := start; ts.Before(end); ts = ts.Add(g.Duration()) {
		if len(sels) == maxDeleteBuckets {
			return usageError(e, fs, fmt.Sprintf("more than %d buckets in the range", maxDeleteBuckets))
		}
		sels = append(sels, czexporter.DeleteSelector{Timestamp: ts, Granularity: g, ElementName: *element, Filter: dims})
	}
	what := "every record"
	if *element != "" || len(dims) > 0 {
		what = fmt.Sprintf("records of element %q within filter %v", orAny(*element), filter)
	}
	fmt.Fprintf(e.stdout, "delete: stream %s, %d %s buckets from %s to %s (last bucket %s): %s\n", *stream, len(sels), g,
		start.Format(time.RFC3339), end.Format(time.RFC3339), sels[len(sels)-1].Timestamp.Format(time.RFC3339), what)
	if future {
		fmt.Fprintf(e.stdout, "delete: --to %s is in the future: the range stops at the current bucket, %s (CloudZero refuses future timestamps)\n",
			*to, current.Format(time.RFC3339))
	}
	if sf.perDay > 0 && len(sels) > sf.perDay {
		fmt.Fprintf(e.stderr, "cloudzero: the range has %d buckets, more than --records-per-day %d (each bucket's selector counts as a record): raise --records-per-day or split the range; nothing was deleted\n",
			len(sels), sf.perDay)
		return exitUsage
	}
	if !apply {
		fmt.Fprintln(e.stdout, "dry run: nothing was deleted; run again with --yes to apply")
		return exitOK
	}
	key, err := sf.apiKey(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, sf.giveUpAfter)
	defer cancel()
	// Every selector has the same size, at most its key's (which ends
	// with `,"value":` and names the element "any" when none is given).
	return deleteBuckets(ctx, *stream, sels, len(selKey), sf, key, e)
}

func prefix(p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", p, err)
}

func orAny(element string) string {
	if element == "" {
		return "any"
	}
	return element
}

// chunkOutcome is what became of one request's buckets.
type chunkOutcome struct {
	first, last time.Time
	buckets     int
	state       string // deleted, refused, not sent
}

// deleteChunk is the number of selectors of selBytes bytes one request
// holds: at most selectorsPerRequest and --max-records-per-request, under
// maxDeleteBytes, and no more than the limiter grants at once (its burst,
// the daily budget).
func deleteChunk(selBytes int, sf sendFlags, limiter *czexporter.Limiter) int {
	n := min(selectorsPerRequest, sf.perRequest, (maxDeleteBytes-len(`{"records":[]}`))/(selBytes+1))
	if m := limiter.MaxChunk(); m > 0 {
		n = min(n, m)
	}
	return max(n, 1)
}

// deleteBuckets sends the selectors in requests of deleteChunk, in time
// order, with the exporter's rate limiter and retry policy (a delete is
// idempotent: retrying one that may have been applied is harmless). A
// request CloudZero finds too large (413) is split in halves.
func deleteBuckets(ctx context.Context, stream string, sels []czexporter.DeleteSelector, selBytes int, sf sendFlags, key string, e env) int {
	client := sf.client(key)
	limiter := czexporter.NewLimiter(czexporter.LimiterConfig{RecordsPerSecond: sf.perSecond, Burst: sf.burst, RecordsPerDay: sf.perDay})
	bo := czexporter.Backoff{InitialInterval: sf.retryInitial, MaxInterval: sf.retryMax, Multiplier: 1.5, RandomizationFactor: 0.5}
	n := deleteChunk(selBytes, sf, limiter)
	var queue [][]czexporter.DeleteSelector
	for i := 0; i < len(sels); i += n {
		queue = append(queue, sels[i:min(i+n, len(sels))])
	}
	var outcomes []chunkOutcome
	var settled atomic.Int64
	stop := startProgress(e, fmt.Sprintf("delete %d buckets", len(sels)), func() (int, int) { return int(settled.Load()), len(sels) })
	var stopped error
	local := false // stopped by a local error: nothing was asked of CloudZero
	for len(queue) > 0 {
		chunk := queue[0]
		queue = queue[1:]
		o := chunkOutcome{first: chunk[0].Timestamp, last: chunk[len(chunk)-1].Timestamp, buckets: len(chunk), state: "not sent"}
		if stopped == nil {
			err := sendDelete(ctx, client, limiter, bo, stream, chunk, e)
			var se *czexporter.StatusError
			switch {
			case err == nil:
				o.state = "deleted"
			case errors.Is(err, czexporter.ErrTooLarge) && len(chunk) > 1:
				half := len(chunk) / 2
				queue = append([][]czexporter.DeleteSelector{chunk[:half], chunk[half:]}, queue...)
				continue
			case errors.As(err, &se) && (czexporter.IsPermanent(err) || errors.Is(err, czexporter.ErrTooLarge)):
				o.state = "refused"
				fmt.Fprintf(e.stderr, "refused (%d buckets from %s): %v\n", len(chunk), o.first.Format(time.RFC3339), err)
			case errors.Is(err, czexporter.ErrInvalid):
				// The client or the limiter refused it before sending:
				// not CloudZero's answer.
				stopped, local = err, true
				fmt.Fprintf(e.stderr, "cloudzero: stopped by a local limit, not sent: %v\n", err)
			default:
				stopped = err
				fmt.Fprintf(e.stderr, "cloudzero: stopped: %v\n", err)
			}
			settled.Add(int64(len(chunk)))
		}
		if n := len(outcomes); n > 0 && outcomes[n-1].state == o.state {
			outcomes[n-1].last, outcomes[n-1].buckets = o.last, outcomes[n-1].buckets+o.buckets
		} else {
			outcomes = append(outcomes, o)
		}
	}
	stop()
	code := deleteReport(e, outcomes, len(sels))
	if code == exitNone && local {
		return exitUsage // nothing was sent: a usage error, not CloudZero's refusal
	}
	return code
}

// sendDelete sends one request, retrying what is not a refusal until ctx
// ends; every attempt waits on the limiter, and one that fails gives its
// records back to the daily budget (which counts what CloudZero confirmed,
// as the exporter's sender does). A 413 is returned at once: the caller
// splits the request.
func sendDelete(ctx context.Context, client *czexporter.Client, limiter *czexporter.Limiter, bo czexporter.Backoff,
	stream string, chunk []czexporter.DeleteSelector, e env) error {
	for attempt := 0; ; attempt++ {
		if err := limiter.Wait(ctx, len(chunk)); err != nil {
			return err
		}
		err := client.Delete(ctx, stream, chunk)
		if err == nil {
			return nil
		}
		limiter.Refund(len(chunk))
		if czexporter.IsPermanent(err) || errors.Is(err, czexporter.ErrTooLarge) || ctx.Err() != nil {
			return err
		}
		delay := bo.Delay(attempt, err)
		fmt.Fprintf(e.stderr, "cloudzero: delete: %v; retrying in %s\n", err, delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// deleteReport lists the ranges by outcome and returns the exit status.
func deleteReport(e env, outcomes []chunkOutcome, total int) int {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tFROM\tLAST BUCKET\tBUCKETS")
	deleted := 0
	for _, o := range outcomes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", o.state, o.first.Format(time.RFC3339), o.last.Format(time.RFC3339), o.buckets)
		if o.state == "deleted" {
			deleted += o.buckets
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(e.stdout, "deleted %d of %d buckets\n", deleted, total)
	switch {
	case deleted == total:
		return exitOK
	case deleted == 0:
		return exitNone
	}
	fmt.Fprintln(e.stdout, "a delete is idempotent: run the same command again to finish")
	return exitPartial
}
