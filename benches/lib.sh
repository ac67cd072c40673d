# Helpers shared by benches/load.sh and benches/profile.sh (sourced; each script defines
# `die` and sets TPL, the template directory, and WORK, its temporary directory).

free_ports() { # N -> N distinct free loopback ports
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

render() { # template output VAR...: @VAR@ -> $VAR
  local tpl=$1 out=$2 v val args=(); shift 2
  for v in "$@"; do
    val=${!v}; val=${val//\\/\\\\}; val=${val//&/\\&}; val=${val//|/\\|}
    args+=(-e "s|@$v@|$val|g")
  done
  sed "${args[@]}" "$TPL/$tpl" >"$out"
  ! grep -n '@[A-Z_]*@' "$out" | grep -v '^[0-9]*:[[:space:]]*#' >&2 || die "unfilled placeholder in $out"
}

render_nginx_conf() { # $WORK/nginx.conf for the upstream on UPSTREAM_PORT
  local nginx_v m
  nginx_v=$(nginx -V 2>&1) || true
  NGINX_EXTRA_TEMP="" # temp paths only for the modules this nginx was built with
  for m in fastcgi uwsgi scgi; do
    [[ $nginx_v == *"--without-http_${m}_module"* ]] || NGINX_EXTRA_TEMP+="${m}_temp_path $WORK/nginx-tmp/$m; "
  done
  mkdir -p "$WORK/nginx-tmp"
  render nginx.conf.in "$WORK/nginx.conf" WORK UPSTREAM_PORT NGINX_EXTRA_TEMP
}
