#!/usr/bin/env bash
# Screenshot of the CloudZero emulator's page in headless Chromium.
#
#   scripts/emulator-screenshot.sh [OUT.png]     (default _build/emulator-screenshot.png)
#
# Installs Debian's chromium if it is missing, builds and starts the emulator on a
# free 127.0.0.1 port, posts a few records with curl, takes the screenshot, checks
# that it is a non-empty PNG, and stops the emulator. _build/ is git-ignored (root .gitignore).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-_build/emulator-screenshot.png}
mkdir -p _build "$(dirname "$out")"

if ! command -v chromium >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "installing chromium..."
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

go build -o _build/cloudzero-emulator ./cmd/cloudzero-emulator

tmp=$(mktemp -d)
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

key=screenshot-key
_build/cloudzero-emulator -listen 127.0.0.1:0 -addr-file "$tmp/addr" -api-key "$key" >"$tmp/emulator.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	[ -s "$tmp/addr" ] && break
	sleep 0.1
done
if [ ! -s "$tmp/addr" ]; then
	echo "emulator did not start:" >&2
	cat "$tmp/emulator.log" >&2
	exit 1
fi
url=$(cat "$tmp/addr")
echo "emulator at $url"

post() { # post STREAM JSON-BODY
	curl -sS -o /dev/null -w "%{http_code} $1\n" --max-time 10 -X POST "$url/unit-cost/v1/telemetry/allocation/$1/sum" \
		-H "Authorization: $key" -H 'Content-Type: application/json' --data "$2"
}
h0=$(date -u +%Y-%m-%dT%H:00:00Z)
h1=$(date -u -d '1 hour ago' +%Y-%m-%dT%H:00:00Z)
d0=$(date -u +%Y-%m-%dT00:00:00Z)
r() { # r TIMESTAMP GRANULARITY ELEMENT VALUE FEATURE
	printf '{"timestamp":"%s","granularity":"%s","element_name":"%s","value":"%s","filter":{"custom:feature":["%s"]}}' "$@"
}
post api-requests "{\"records\":[$(r "$h0" HOURLY acme-corp 1200 search),$(r "$h0" HOURLY globex 600 search),$(r "$h0" HOURLY initech 150.5 search),$(r "$h0" HOURLY '<b>umbrella</b> & co' 49.5 search)]}"
post api-requests "{\"records\":[$(r "$h1" HOURLY acme-corp 300 search),$(r "$h1" HOURLY globex 900 search)]}"
post storage-gb-days "{\"records\":[$(r "$d0" DAILY acme-corp 0.1 storage),$(r "$d0" DAILY acme-corp 0.2 storage),$(r "$d0" DAILY globex 0.7 storage)]}"
# One rejected request, so that the status counts show a 400.
post storage-gb-days "{\"records\":[$(r "$d0" DAILY acme-corp -1 storage)]}"

timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--user-data-dir="$tmp/profile" --screenshot="$out" --window-size=1200,800 "$url/" >"$tmp/chromium.log" 2>&1 || {
	echo "chromium failed:" >&2
	cat "$tmp/chromium.log" >&2
	exit 1
}

if [ ! -s "$out" ] || [ "$(head -c 8 "$out" | od -An -tx1 | tr -d ' \n')" != "89504e470d0a1a0a" ]; then
	echo "no PNG written to $out" >&2
	exit 1
fi

# The page as the browser rendered it: shares computed, names escaped.
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--user-data-dir="$tmp/profile" --dump-dom "$url/" >"$tmp/dom.html" 2>"$tmp/chromium.log" || {
	echo "chromium --dump-dom failed:" >&2
	cat "$tmp/chromium.log" >&2
	exit 1
}
for want in 'acme-corp' '1200 (60.0%)' '150.5 (7.5%)' '0.3 (30.0%)' '&lt;b&gt;umbrella&lt;/b&gt; &amp; co' 'value_not_positive'; do
	if ! grep -qF -- "$want" "$tmp/dom.html"; then
		echo "the rendered page lacks: $want" >&2
		exit 1
	fi
done
echo "screenshot: $out ($(wc -c <"$out") bytes)"
