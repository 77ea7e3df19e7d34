# Sourced by the GPU scripts: `stage NAME SECONDS COMMAND...` runs one stage under its own time limit,
# logs it to $out/NAME.log and appends its exit status and seconds to $out/stages.txt; a failed stage
# does not stop the others. GPU_RUN_STAGES=a,b runs only those stages; GPU_RUN_ARCHIVE=FILE.tgz archives
# $out there after each stage (what a run stopped early had done so far; stages running side by side each
# write their own archive and rename it into place, so the archive is always whole).
stage() {  # name seconds command...
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  case ",${GPU_RUN_STAGES:-$name}," in *",$name,"*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$out/stages.txt"
  tail -n 40 "$out/$name.log"
  if [ -n "${GPU_RUN_ARCHIVE:-}" ]; then  # tar's status 1: a log changed while it was read (still whole)
    tar czf "$GPU_RUN_ARCHIVE.$name" -C "$out" .
    [ $? -le 1 ] && mv -f "$GPU_RUN_ARCHIVE.$name" "$GPU_RUN_ARCHIVE"
  fi
}
