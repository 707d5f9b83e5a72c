// Vitest reporter that appends one line per finished test to $DS_REPORT:
// "<passed|failed|skipped>\t<full test name>". run.sh counts results from this file, so the
// counts survive even when run.sh has to stop a run that hangs (see DS_RUN_TIMEOUT).
import { appendFileSync } from "node:fs"

export default class ProgressReporter {
  onTestCaseResult(testCase) {
    const file = process.env.DS_REPORT
    if (!file) return
    const name = testCase.fullName.replace(/[\t\n]/g, " ")
    appendFileSync(file, `${testCase.result().state}\t${name}\n`)
  }
}
