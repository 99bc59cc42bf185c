package emulator

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func getPage(t *testing.T, f *fixture) (string, http.Header) {
	t.Helper()
	resp, err := f.client.Get(f.ts.URL + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b), resp.Header
}

func TestPageEmpty(t *testing.T) {
	f := newFixture(t)
	page, h := getPage(t, f)
	assert.Equal(t, "text/html; charset=utf-8", h.Get("Content-Type"))
	assert.Contains(t, page, "No records accepted yet")
	assert.Contains(t, page, `<meta http-equiv="refresh" content="5">`)
}

func TestPageShowsSharesAndEscapes(t *testing.T) {
	f := newFixture(t)
	evil := `<script>alert("x")</script>`
	filter := map[string][]string{"tag:env": {`"><img src=x onerror=alert(1)>`}}
	r := f.post(streamURL("billing.records", "sum"), body(
		rec(hour0, Hourly, evil, "3", filter),
		rec(hour0, Hourly, "a&b", "1", filter),
		rec(hourM1, Hourly, "solo", "0.5", filter),
	))
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, 403, f.do(http.MethodPost, streamURL("s", "sum"), nil, map[string]string{"Authorization": "no"}).status)

	page, _ := getPage(t, f)
	assert.NotContains(t, page, "<script>")
	assert.NotContains(t, page, "<img")
	assert.NotContains(t, page, "ZgotmplZ", "CSS values must not be filtered out")
	assert.Contains(t, page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")
	assert.Contains(t, page, "a&amp;b")
	assert.Contains(t, page, "Stream billing.records")
	assert.Contains(t, page, hour0+" — total 4")
	assert.Contains(t, page, "width: 75.000%")
	assert.Contains(t, page, "width: 25.000%")
	assert.Contains(t, page, "3 (75.0%)")
	assert.Contains(t, page, "1 (25.0%)")
	assert.Contains(t, page, "0.5 (100.0%)")
	assert.Contains(t, page, "200: 1")
	assert.Contains(t, page, "403: 1")
	// Newest bucket first.
	assert.Less(t, strings.Index(page, hour0+" — "), strings.Index(page, hourM1+" — "))
}

func TestPageLimitsElementsAndBuckets(t *testing.T) {
	f := newFixture(t)
	var recs []map[string]any
	for i := range pageMaxElements + 5 {
		recs = append(recs, rec(hour0, Hourly, "el-"+string(rune('A'+i%26))+string(rune('a'+i/26)), 1, nil))
	}
	require.Equal(t, 200, f.post(streamURL("s", "sum"), body(recs...)).status)
	page, _ := getPage(t, f)
	assert.Contains(t, page, "(5 more elements)")
}
