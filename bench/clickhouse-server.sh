#!/usr/bin/env bash
# Starts a scratch clickhouse-server (Debian's package) in a temp dir on a free port for the store
# benchmark, prints its URL, and leaves it running; stop it with `kill $(cat <dir>/pid)`.
set -euo pipefail
bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
[ -x "$bin" ] || { echo "clickhouse-server not found: apt-get install -y clickhouse-server" >&2; exit 1; }
dir=$(mktemp -d /tmp/tollgate-bench-ch.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex><profiles><default></default></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
XML
cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog></logger>
  <http_port>$port</http_port><tcp_port>$tcp</tcp_port><listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path><tmp_path>$dir/tmp/</tmp_path><user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <mark_cache_size>5368709120</mark_cache_size>
  <users_config>$dir/users.xml</users_config><default_profile>default</default_profile><default_database>default</default_database>
</yandex>
XML
nohup "$bin" --config-file="$dir/config.xml" >/dev/null 2>&1 &
echo $! > "$dir/pid"
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/ping" >/dev/null 2>&1; then echo "http://127.0.0.1:$port"; exit 0; fi
  sleep 0.2
done
echo "clickhouse-server did not start; see $dir/error.log" >&2
exit 1
