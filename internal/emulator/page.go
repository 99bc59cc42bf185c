package emulator

import (
	"bytes"
	"hash/fnv"
	"html/template"
	"math/big"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Page limits, so that a big store still renders a readable page.
const (
	pageMaxBuckets  = 24 // newest buckets per stream
	pageMaxElements = 30 // biggest elements per bucket; the rest are summed as one row
	pageRefreshSecs = 5
)

type pageData struct {
	Generated       string
	Refresh         int
	Statuses        []pageCount
	Rejections      []pageCount
	RecordsAccepted int64
	Unaligned       int64
	Ambiguous       int64
	AmbiguousRecs   int64
	Faults          string
	Streams         []pageStream
}

type pageCount struct {
	Key   string
	Value int64
	Class string
}

type pageStream struct {
	Name        string
	Granularity string
	FilterKeys  string
	Total       string
	Entries     int
	Buckets     []pageBucket
	Hidden      int
}

type pageBucket struct {
	Timestamp string
	Total     string
	Elements  []pageElement
}

type pageElement struct {
	Name    string
	Value   string
	Percent string // e.g. "42.5", for the label
	Width   string // e.g. "42.500", for the bar's CSS width in %
	Hue     int
	Title   string // filters that make up the element's value
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>CloudZero emulator</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d2330; background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
.sub { color: #5b6475; font-size: 13px; margin-bottom: 16px; }
.card { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 14px 18px; margin-bottom: 16px; }
.counts span { display: inline-block; margin: 0 14px 6px 0; padding: 3px 10px; border-radius: 12px; background: #eef1f5; font-size: 13px; }
.counts .ok { background: #dcf3e3; } .counts .client { background: #fde2e1; } .counts .server { background: #fff0cc; }
h2 { font-size: 18px; margin: 0 0 2px 0; }
h3 { font-size: 14px; margin: 14px 0 6px 0; color: #333a48; }
.meta { color: #5b6475; font-size: 12px; }
.row { display: grid; grid-template-columns: 220px 1fr 210px; align-items: center; gap: 10px; margin: 3px 0; font-size: 13px; }
.name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.track { background: #e9ecf2; border-radius: 4px; height: 16px; overflow: hidden; }
.bar { height: 16px; border-radius: 4px; min-width: 2px; }
.val { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.empty { color: #5b6475; font-style: italic; }
a { color: #2456c8; }
</style>
</head>
<body>
<h1>CloudZero Allocation Telemetry emulator</h1>
<div class="sub">Updated {{.Generated}} (refreshes every {{.Refresh}} s) · <a href="/emulator/ledger">ledger JSON</a> · <a href="/emulator/faults">faults</a> · <a href="/emulator/limits">limits</a></div>
<div class="card counts">
<div><b>Requests by status:</b>
{{range .Statuses}}<span class="{{.Class}}">{{.Key}}: {{.Value}}</span>{{else}}<span>none yet</span>{{end}}</div>
<div><b>Records accepted:</b> <span>{{.RecordsAccepted}}</span>
<b>Unaligned timestamps:</b> <span>{{.Unaligned}}</span>
<b>Applied but answered with an error:</b> <span>{{.Ambiguous}} requests, {{.AmbiguousRecs}} records</span></div>
{{if .Rejections}}<div><b>Rejections:</b> {{range .Rejections}}<span class="client">{{.Key}}: {{.Value}}</span>{{end}}</div>{{end}}
<div><b>Faults:</b> {{.Faults}}</div>
</div>
{{range .Streams}}
<div class="card">
<h2>Stream {{.Name}}</h2>
<div class="meta">{{.Granularity}} · filter keys: {{.FilterKeys}} · {{.Entries}} keys · total {{.Total}}</div>
{{range .Buckets}}
<h3>{{.Timestamp}} — total {{.Total}}</h3>
{{range .Elements}}
<div class="row" title="{{.Title}}">
<div class="name">{{.Name}}</div>
<div class="track"><div class="bar" style="width: {{.Width}}%; background: hsl({{.Hue}}, 62%, 52%);"></div></div>
<div class="val">{{.Value}} ({{.Percent}}%)</div>
</div>
{{end}}
{{end}}
{{if .Hidden}}<div class="meta">{{.Hidden}} older buckets not shown (see the ledger).</div>{{end}}
</div>
{{else}}
<div class="card empty">No records accepted yet. POST to /unit-cost/v1/telemetry/allocation/{stream}/sum.</div>
{{end}}
</body>
</html>
`))

func (s *Server) servePage(w http.ResponseWriter, _ *http.Request) {
	data := s.pageData()
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		http.Error(w, "rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) pageData() pageData {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := pageData{
		Generated:       s.cfg.Now().UTC().Format(time.RFC3339),
		Refresh:         pageRefreshSecs,
		RecordsAccepted: s.st.recordsAccepted,
		Unaligned:       s.st.unaligned,
		Ambiguous:       s.st.ambiguousReq,
		AmbiguousRecs:   s.st.ambiguousRec,
		Faults:          faultSummary(s.faults.state(), s.limits),
	}
	codes := make([]int, 0, len(s.st.byStatus))
	for c := range s.st.byStatus {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		class := "ok"
		if c >= 500 {
			class = "server"
		} else if c >= 300 {
			class = "client"
		}
		d.Statuses = append(d.Statuses, pageCount{Key: strconv.Itoa(c), Value: s.st.byStatus[c], Class: class})
	}
	for _, k := range sortedKeys(s.st.reasons) {
		d.Rejections = append(d.Rejections, pageCount{Key: k, Value: s.st.reasons[k]})
	}
	for _, name := range sortedKeys(s.store.streams) {
		d.Streams = append(d.Streams, pageStreamOf(s.store.streams[name]))
	}
	return d
}

func pageStreamOf(st *stream) pageStream {
	ps := pageStream{Name: st.name, Granularity: st.granularity, FilterKeys: "none", Entries: len(st.entries)}
	if len(st.keys) > 0 {
		ps.FilterKeys = strings.Join(st.keys, ", ")
	}
	type elem struct {
		value   *big.Rat
		filters []string
	}
	type bucket struct {
		ts    time.Time
		key   string
		total *big.Rat
		elems map[string]*elem
	}
	buckets := map[string]*bucket{}
	total := new(big.Rat)
	for _, e := range sortedEntries(st) {
		b := buckets[e.tsKey]
		if b == nil {
			b = &bucket{ts: e.ts, key: e.tsKey, total: new(big.Rat), elems: map[string]*elem{}}
			buckets[e.tsKey] = b
		}
		el := b.elems[e.element]
		if el == nil {
			el = &elem{value: new(big.Rat)}
			b.elems[e.element] = el
		}
		el.value.Add(el.value, e.value)
		el.filters = append(el.filters, e.filterKey+" = "+FormatDecimal(e.value))
		b.total.Add(b.total, e.value)
		total.Add(total, e.value)
	}
	ps.Total = FormatDecimal(total)
	ordered := make([]*bucket, 0, len(buckets))
	for _, b := range buckets {
		ordered = append(ordered, b)
	}
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].ts.After(ordered[j].ts) })
	if len(ordered) > pageMaxBuckets {
		ps.Hidden = len(ordered) - pageMaxBuckets
		ordered = ordered[:pageMaxBuckets]
	}
	for _, b := range ordered {
		pb := pageBucket{Timestamp: b.key, Total: FormatDecimal(b.total)}
		names := sortedKeys(b.elems)
		sort.SliceStable(names, func(i, j int) bool { return b.elems[names[i]].value.Cmp(b.elems[names[j]].value) > 0 })
		rest, restCount := new(big.Rat), 0
		for i, n := range names {
			if i >= pageMaxElements {
				rest.Add(rest, b.elems[n].value)
				restCount++
				continue
			}
			pb.Elements = append(pb.Elements, pageElementOf(n, b.elems[n].value, b.total, strings.Join(b.elems[n].filters, "\n")))
		}
		if restCount > 0 {
			pb.Elements = append(pb.Elements, pageElementOf("("+strconv.Itoa(restCount)+" more elements)", rest, b.total, ""))
		}
		ps.Buckets = append(ps.Buckets, pb)
	}
	return ps
}

func pageElementOf(name string, v, total *big.Rat, title string) pageElement {
	share := 0.0
	if total.Sign() > 0 {
		share, _ = new(big.Rat).Quo(v, total).Float64()
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return pageElement{
		Name:    name,
		Value:   FormatDecimal(v),
		Percent: strconv.FormatFloat(share*100, 'f', 1, 64),
		Width:   strconv.FormatFloat(share*100, 'f', 3, 64),
		Hue:     int(h.Sum32() % 360),
		Title:   title,
	}
}

func faultSummary(f FaultState, l Limits) string {
	var parts []string
	if f.StepIndex < len(f.Steps) {
		parts = append(parts, "step "+strconv.Itoa(f.StepIndex+1)+" of "+strconv.Itoa(len(f.Steps))+
			", "+strconv.Itoa(f.RemainingInStep)+" request(s) left in it")
		if f.Repeat {
			parts = append(parts, "repeating")
		}
	}
	if l.RecordsPerSecond > 0 {
		parts = append(parts, "limit "+strconv.FormatFloat(l.RecordsPerSecond, 'f', -1, 64)+" records/s, burst "+
			strconv.FormatFloat(l.burst(), 'f', -1, 64))
	}
	if l.RecordsPerDay > 0 {
		parts = append(parts, "limit "+strconv.FormatInt(l.RecordsPerDay, 10)+" records/UTC day")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
