#!/usr/bin/env bash
# Installs the server: the release binary as PREFIX/bin/vfio-user-server, a man page per
# subcommand (made from its --help) under PREFIX/share/man/man1, the systemd units under
# PREFIX/lib/systemd/system, and, when there is none yet, SYSCONFDIR/vfio-user-swift/devices.json
# (one mtty-2; examples/devices.json, installed beside the docs, shows more).
#
#   scripts/install.sh [--prefix DIR] [--sysconfdir DIR] [--binary FILE]
#   scripts/install.sh --uninstall [--prefix DIR]
#
# PREFIX defaults to /usr/local; SYSCONFDIR to /etc for /usr and /usr/local, else PREFIX/etc.
# --binary installs that build instead of building the release one. What was installed is listed
# in PREFIX/share/vfio-user-swift/installed, which --uninstall removes again (a configuration file
# that was changed since stays).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local sysconfdir="" binary="" uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --sysconfdir) sysconfdir=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    *) echo "usage: $0 [--prefix DIR] [--sysconfdir DIR] [--binary FILE] [--uninstall]" >&2; exit 2 ;;
  esac
done
prefix=$(realpath -m "$prefix")
case $prefix in /usr|/usr/local) : "${sysconfdir:=/etc}" ;; *) : "${sysconfdir:=$prefix/etc}" ;; esac
manifest=$prefix/share/vfio-user-swift/installed

if [ "$uninstall" = 1 ]; then
  [ -f "$manifest" ] || { echo "nothing installed under $prefix (no $manifest)" >&2; exit 1; }
  while read -r kind file; do
    case $kind in
      file) rm -f "$file" ;;
      config) cmp -s "$file" systemd/devices.json && rm -f "$file" || echo "kept $file (changed since the install)" ;;
    esac
  done < "$manifest"
  rm -f "$manifest"
  # Directories the install made, if they are empty now.
  for dir in share/vfio-user-swift share/man/man1 share/man share/doc/vfio-user-swift share/doc lib/systemd/system lib/systemd lib bin share; do
    rmdir "$prefix/$dir" 2>/dev/null || true
  done
  rmdir "$sysconfdir/vfio-user-swift" 2>/dev/null || true
  [ "$sysconfdir" != "$prefix/etc" ] || rmdir "$sysconfdir" 2>/dev/null || true
  echo "uninstalled from $prefix"
  exit 0
fi

if [ -z "$binary" ]; then
  scripts/ensure-packages.sh build
  swift build -c release --product vfio-user-server >&2
  binary=.build/release/vfio-user-server
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

installed=()
put() { # put MODE SOURCE DESTINATION
  install -D -m "$1" "$2" "$3"
  installed+=("file $3")
}
put 0755 "$binary" "$prefix/bin/vfio-user-server"

# A man page per subcommand: the --help text as it is, under NAME and DESCRIPTION.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
manpage() { # manpage NAME HELP-COMMAND...
  local name=$1; shift
  local help abstract
  help=$("$@" --help)
  abstract=$(printf '%s\n' "$help" | sed -n 's/^OVERVIEW: //p' | head -1)
  {
    printf '.TH %s 1 "" "vfio-user-swift" "User Commands"\n' "$(printf '%s' "$name" | tr 'a-z' 'A-Z')"
    printf '.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' "$name" "${abstract:-vfio-user-server}"
    # roff: a backslash is written \e; a line starting with . or ' is kept as text with \&.
    printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
    printf '.fi\n'
  } > "$scratch/$name.1"
  put 0644 "$scratch/$name.1" "$prefix/share/man/man1/$name.1"
}
manpage vfio-user-server "$binary"
for command in serve types list start stop restart screenshot client migrate decode proxy describe; do
  manpage "vfio-user-server-$command" "$binary" "$command"
done

for unit in vfio-user-swift.service vfio-user-device@.socket vfio-user-device@.service; do
  sed -e "s|@BINDIR@|$prefix/bin|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" "systemd/$unit" > "$scratch/$unit"
  put 0644 "$scratch/$unit" "$prefix/lib/systemd/system/$unit"
done
put 0644 systemd/tap.conf "$prefix/share/doc/vfio-user-swift/tap.conf"
put 0644 examples/devices.json "$prefix/share/doc/vfio-user-swift/devices.json"
config=$sysconfdir/vfio-user-swift/devices.json
if [ ! -e "$config" ]; then
  install -D -m 0644 systemd/devices.json "$config"
  installed+=("config $config")
fi
mkdir -p "$(dirname "$manifest")"
printf '%s\n' "${installed[@]}" > "$manifest"
echo "installed under $prefix (configuration: $config)"
