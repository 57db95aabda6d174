# Sourced by run.sh and fixes.sh. teacher_of <teachers dir> <task>: print the exported student
# folder of that task's finished teacher run, or fail (exit 2) with what to run first.
teacher_of() {
  local teachers=$1 task=$2 results
  for results in $(grep -l "\"task\": \"$task\"" "$teachers"/*/results.json 2>/dev/null); do
    if grep -q '"status": "ok"' "$results" && [ -d "$(dirname "$results")/student" ]; then
      echo "$(dirname "$results")/student"
      return 0
    fi
  done
  echo "error: no finished $task teacher in $teachers: run experiments/glue_minilm/run.sh" \
       "(its teacher stage) with this OUT first" >&2
  exit 2
}
