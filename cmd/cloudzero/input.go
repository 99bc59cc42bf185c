package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// pos is where an input record comes from, for error messages.
type pos struct {
	file string
	line int
	item int // replay: the record's index in its line's request, from 1
}

func (p pos) String() string {
	if p.item > 0 {
		return fmt.Sprintf("%s:%d: record %d", p.file, p.line, p.item)
	}
	return fmt.Sprintf("%s:%d", p.file, p.line)
}

// rawRecord is one record as read, before validation.
type rawRecord struct {
	at          pos
	stream      string
	op          czexporter.Op // replay only
	timestamp   string
	granularity string
	element     string
	filter      map[string][]string
	value       string
	csvColumns  bool // the filter keys are a CSV file's columns, the same on every line
}

// jsonRecord is a record in CloudZero's JSON form (as dry_run_file writes
// it). Unknown fields are errors: "element-name" is the deprecated form.
type jsonRecord struct {
	Timestamp   string              `json:"timestamp"`
	Granularity string              `json:"granularity"`
	ElementName string              `json:"element_name"`
	Filter      map[string][]string `json:"filter"`
	Value       json.RawMessage     `json:"value"`
}

func (j jsonRecord) raw(at pos, stream string) (rawRecord, error) {
	v := strings.TrimSpace(string(j.Value))
	if s, err := strconv.Unquote(v); err == nil {
		v = s
	}
	if v == "" || v == "null" {
		return rawRecord{}, errors.New("value is missing")
	}
	return rawRecord{at: at, stream: stream, timestamp: j.Timestamp, granularity: j.Granularity,
		element: j.ElementName, filter: j.Filter, value: v}, nil
}

// problems collects input errors, each with its position.
type problems []string

func (p *problems) add(at pos, format string, args ...any) {
	*p = append(*p, at.String()+": "+fmt.Sprintf(format, args...))
}

// utf8BOM is the byte order mark some editors (Windows') put first.
var utf8BOM = []byte("\ufeff")

// openInput reads a file, or stdin for "-", without the UTF-8 byte order
// mark it may start with: every reader after it sees the data alone.
func openInput(name string, stdin io.Reader) ([]byte, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	return bytes.TrimPrefix(data, utf8BOM), err
}

// readRecords reads the records of one send input: CSV (by its .csv name,
// or content that does not start with '{'), a {"records":[...]} document,
// or one JSON record per line.
func readRecords(name string, data []byte, stream string, probs *problems) []rawRecord {
	trimmed := bytes.TrimLeft(data, " \t\r\n") // openInput removed a byte order mark
	if strings.EqualFold(filepath.Ext(name), ".csv") || (len(trimmed) > 0 && trimmed[0] != '{') {
		return readCSV(name, data, stream, probs)
	}
	if isDocument(trimmed) {
		return readDocument(name, data, stream, probs)
	}
	var out []rawRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		at := pos{file: name, line: n}
		var j jsonRecord
		if err := strictJSON(line, &j); err != nil {
			probs.add(at, "not a JSON record: %v", err)
			continue
		}
		r, err := j.raw(at, stream)
		if err != nil {
			probs.add(at, "%v", err)
			continue
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		probs.add(pos{file: name}, "%v", err)
	}
	return out
}

// isDocument reports whether data is one {"records": ...} object (rather
// than JSON lines, one record per line).
func isDocument(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	t, err := dec.Token()
	return err == nil && t == "records"
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// readDocument reads {"records":[...]}, each record with the line it
// starts on.
func readDocument(name string, data []byte, stream string, probs *problems) []rawRecord {
	lineAt := func(off int64) int { return 1 + bytes.Count(data[:min(off, int64(len(data)))], []byte("\n")) }
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	fail := func(err error) []rawRecord {
		probs.add(pos{file: name, line: lineAt(dec.InputOffset())}, "not a {\"records\":[...]} document: %v", err)
		return nil
	}
	for _, want := range []any{json.Delim('{'), "records", json.Delim('[')} {
		if t, err := dec.Token(); err != nil || t != want {
			if err == nil {
				err = fmt.Errorf("found %v where %v belongs", t, want)
			}
			return fail(err)
		}
	}
	var out []rawRecord
	for dec.More() {
		off := dec.InputOffset()
		for off < int64(len(data)) && strings.ContainsRune(" \t\r\n,", rune(data[off])) {
			off++
		}
		at := pos{file: name, line: lineAt(off)}
		var j jsonRecord
		if err := dec.Decode(&j); err != nil {
			probs.add(at, "not a JSON record: %v", err)
			return out // the decoder cannot go on after a syntax error
		}
		r, err := j.raw(at, stream)
		if err != nil {
			probs.add(at, "%v", err)
			continue
		}
		out = append(out, r)
	}
	for _, want := range []any{json.Delim(']'), json.Delim('}')} {
		if t, err := dec.Token(); err != nil || t != want {
			return append(out, fail(fmt.Errorf("document not closed"))...)
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		probs.add(pos{file: name, line: lineAt(dec.InputOffset())}, "data after the document")
	}
	return out
}

// CSV columns other than these are filter keys.
var csvColumns = []string{"timestamp", "granularity", "element_name", "value"}

// readCSV reads a CSV with a header: timestamp, granularity, element_name,
// value, and one column per filter key (several values split by "|").
func readCSV(name string, data []byte, stream string, probs *problems) []rawRecord {
	r := csv.NewReader(bytes.NewReader(data))
	r.ReuseRecord = false
	header, err := r.Read()
	if err != nil {
		probs.add(pos{file: name, line: 1}, "no CSV header: %v", err)
		return nil
	}
	col := map[string]int{}
	var filterCols []string
	for i, h := range header {
		h = strings.TrimSpace(h)
		if _, dup := col[h]; dup || h == "" {
			probs.add(pos{file: name, line: 1}, "column %d: empty or repeated header %q", i+1, h)
			return nil
		}
		col[h] = i
		if !slices.Contains(csvColumns, h) {
			filterCols = append(filterCols, h)
		}
	}
	for _, c := range csvColumns {
		if _, ok := col[c]; !ok {
			probs.add(pos{file: name, line: 1}, "the header has no %q column (needs %s, then one column per filter key)", c, strings.Join(csvColumns, ", "))
			return nil
		}
	}
	var out []rawRecord
	for {
		row, err := r.Read()
		if err == io.EOF {
			return out
		}
		if err != nil {
			// FieldPos is only valid after a successful Read; a parse
			// error carries its own lines.
			at := pos{file: name}
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				at.line = pe.StartLine
			}
			probs.add(at, "%v", err)
			if errors.Is(err, csv.ErrFieldCount) {
				continue
			}
			return out
		}
		line, _ := r.FieldPos(0)
		at := pos{file: name, line: line}
		rec := rawRecord{at: at, stream: stream, csvColumns: true, timestamp: row[col["timestamp"]], granularity: row[col["granularity"]],
			element: row[col["element_name"]], value: strings.TrimSpace(row[col["value"]])}
		for _, k := range filterCols {
			if rec.filter == nil {
				rec.filter = map[string][]string{}
			}
			cell := row[col[k]]
			if cell == "" {
				rec.filter[k] = nil // reported by validate: every record of a stream has the same keys
				continue
			}
			rec.filter[k] = strings.Split(cell, "|")
		}
		out = append(out, rec)
	}
}

// readReplay reads a dry_run_file: one request per line, "stream op body"
// ("stream body" from exporters before the operation was written: sum).
func readReplay(name string, data []byte, probs *problems) []rawRecord {
	var out []rawRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		at := pos{file: name, line: n}
		stream, rest, _ := strings.Cut(line, " ")
		op := czexporter.OpSum
		if !strings.HasPrefix(rest, "{") {
			var o string
			o, rest, _ = strings.Cut(rest, " ")
			op = czexporter.Op(o)
		}
		if op != czexporter.OpSum && op != czexporter.OpReplace {
			probs.add(at, "operation %q: a dry_run_file line is \"stream sum|replace {body}\"", op)
			continue
		}
		var body struct {
			Records []jsonRecord `json:"records"`
		}
		if err := strictJSON([]byte(rest), &body); err != nil {
			probs.add(at, "not a request body: %v", err)
			continue
		}
		for i, j := range body.Records {
			at := pos{file: name, line: n, item: i + 1}
			r, err := j.raw(at, stream)
			if err != nil {
				probs.add(at, "%v", err)
				continue
			}
			r.op = op
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		probs.add(pos{file: name}, "%v", err)
	}
	return out
}

// checked is a validated record: its canonical key and value.
type checked struct {
	at         pos
	stream     string
	op         czexporter.Op
	key        record.Key
	value      float64
	normalised bool // its timestamp was not the start of its bucket
}

// streamShape is what every record of one stream must share.
type streamShape struct {
	first       pos
	granularity record.Granularity
	keys        []string
}

// validate checks each record with the exporter's rules (record.NewKey,
// record.ValidValue, record.ValidStreamName) and the stream's consistency
// (one granularity and one set of filter keys per stream, as CloudZero
// requires), and normalises timestamps to their UTC bucket start.
func validate(raws []rawRecord, defaultGranularity record.Granularity, now time.Time, probs *problems) []checked {
	shapes := map[string]*streamShape{}
	badStreams := map[string]bool{}
	badKeys := map[string]bool{}
	out := make([]checked, 0, len(raws))
	for _, r := range raws {
		if err := record.ValidStreamName(r.stream); err != nil {
			if !badStreams[r.stream] {
				probs.add(r.at, "stream name %q: %v", r.stream, err)
				badStreams[r.stream] = true
			}
			continue
		}
		g := record.Granularity(strings.ToUpper(strings.TrimSpace(r.granularity)))
		if g == "" {
			g = defaultGranularity
		}
		if !g.Valid() {
			probs.add(r.at, "granularity %q: must be HOURLY or DAILY", r.granularity)
			continue
		}
		ts, err := parseTime(r.timestamp, g == record.Daily)
		if err != nil {
			probs.add(r.at, "timestamp %q: %v", r.timestamp, err)
			continue
		}
		start := g.Truncate(ts)
		if start.After(now) {
			probs.add(r.at, "timestamp %s is in the future (CloudZero refuses future records)", r.timestamp)
			continue
		}
		v, err := parseValue(r.value)
		if err != nil {
			probs.add(r.at, "value %q: %v", r.value, err)
			continue
		}
		if err := record.ValidValue(v); err != nil {
			probs.add(r.at, "%v", err)
			continue
		}
		rec := record.Record{Timestamp: start, Granularity: g, ElementName: r.element}
		bad := false
		for _, k := range slices.Sorted(maps.Keys(r.filter)) {
			switch msg := record.FilterKeyProblem(k); {
			case msg != "":
				// A CSV column's key once per file (it would give the same
				// problem on every line); a JSON record's on its own line.
				if column := r.at.file + "\x00" + k; !r.csvColumns || !badKeys[column] {
					probs.add(r.at, "filter key %q %s", k, msg)
					badKeys[column] = true
				}
				bad = true
			case len(r.filter[k]) == 0:
				probs.add(r.at, "filter %q has no value (every record of a stream needs the same filter keys)", k)
				bad = true
			case slices.Contains(r.filter[k], ""):
				probs.add(r.at, "filter %q has an empty value (in CSV, a \"|\" with nothing on one side)", k)
				bad = true
			}
			rec.Filter = append(rec.Filter, record.Dimension{Key: k, Values: slices.Clone(r.filter[k])})
		}
		if bad {
			continue
		}
		key, err := record.NewKey(rec)
		if err != nil {
			probs.add(r.at, "%v", err)
			continue
		}
		keys := slices.Sorted(maps.Keys(r.filter))
		if sh := shapes[r.stream]; sh == nil {
			shapes[r.stream] = &streamShape{first: r.at, granularity: g, keys: keys}
		} else if sh.granularity != g {
			probs.add(r.at, "granularity %s differs from %s at %s: a stream has one granularity", g, sh.granularity, sh.first)
			continue
		} else if !slices.Equal(sh.keys, keys) {
			probs.add(r.at, "filter keys [%s] differ from [%s] at %s: every record of a stream has the same keys",
				strings.Join(keys, " "), strings.Join(sh.keys, " "), sh.first)
			continue
		}
		out = append(out, checked{at: r.at, stream: r.stream, op: r.op, key: key, value: v, normalised: !start.Equal(ts)})
	}
	return out
}

// parseTime accepts RFC 3339 (any offset) and, with date (DAILY data, and
// the bounds of a delete range), a date: for HOURLY records a date would
// put a day's usage in its first hour.
func parseTime(s string, date bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		if !date {
			return time.Time{}, errors.New("a date is only for DAILY records: an HOURLY record needs its hour (2026-01-02T15:00:00Z)")
		}
		return t, nil
	}
	if _, err := time.Parse("2006-01-02T15:04:05", s); err == nil {
		return time.Time{}, errors.New("no time zone (add Z for UTC, or an offset)")
	}
	if !date {
		return time.Time{}, errors.New("not RFC 3339 (2026-01-02T15:00:00Z)")
	}
	return time.Time{}, errors.New("not RFC 3339 (2026-01-02T15:00:00Z) or a date (2026-01-02)")
}

// parseValue reads a decimal; exponents are accepted (the value is sent
// without one).
func parseValue(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, errors.New("not a number")
	}
	return v, nil
}
