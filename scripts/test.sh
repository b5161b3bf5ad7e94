#!/usr/bin/env bash
# The project's test command: finds or starts a Redis on loopback, then
# runs vet and the race-enabled test suite against it.
#   scripts/test.sh [go test flags/packages]   (default: ./...)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=""
apt_install() { # package... : Debian packages the tests need
	if [[ -z "$apt_updated" ]]; then
		apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_ping() { # host port -> 0 when a Redis answers PING
	{ exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
	printf 'PING\r\n' >&3
	local reply=""
	read -r -t 2 reply <&3 || true
	exec 3>&- 3<&-
	[[ "$reply" == +PONG* ]]
}

if [[ -z "${USHER_TEST_REDIS_URL:-}" ]]; then
	if redis_ping 127.0.0.1 6379; then
		export USHER_TEST_REDIS_URL="redis://127.0.0.1:6379/0"
	else
		if ! command -v redis-server >/dev/null; then
			echo "test.sh: no Redis answers on 127.0.0.1:6379; installing Debian's redis-server" >&2
			apt_install redis-server
		fi
		port=""
		for p in $(seq 16379 16479); do
			if { exec 4<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null; then exec 4>&-; else port=$p; break; fi
		done
		[[ -n "$port" ]] || { echo "test.sh: no free loopback port for Redis" >&2; exit 1; }
		dir=$(mktemp -d)
		redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
			--daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
		trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
		for _ in $(seq 50); do redis_ping 127.0.0.1 "$port" && break; sleep 0.1; done
		redis_ping 127.0.0.1 "$port" || { echo "test.sh: Redis did not start on port $port" >&2; cat "$dir/redis.log" >&2; exit 1; }
		export USHER_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
	fi
fi
echo "test.sh: Redis for tests at $USHER_TEST_REDIS_URL" >&2
# The restart test runs a redis-server of its own; the alert rules are
# checked with promtool.
# checked with promtool. Outside CI a failed install only skips those tests.
need() { # command package
	command -v "$1" >/dev/null && return
	echo "test.sh: installing Debian's $2 (for $1)" >&2
	apt_install "$2" || [[ "${CI:-}" != true ]]
}
need redis-server redis-server
need promtool prometheus

go vet ./...
if [[ $# -eq 0 ]]; then set -- ./...; fi
go test -race -count=1 "$@"
