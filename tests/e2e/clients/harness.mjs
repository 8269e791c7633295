// The node side of tests/e2e/clients/scenario.py: read the scenario input (JSON on stdin), play the
// steps in order, print one JSON report on stdout (one key per operation; a step that throws is
// reported with what it threw, and the rest still run). Summaries match the Python drivers'.

export async function readInput() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

export async function runSteps(steps) {
  const report = {};
  for (const [name, action] of steps) {
    try {
      report[name] = await action();
    } catch (err) {
      const status = err?.response?.status ?? err?.status;
      report[name] = { error: `${err?.name ?? 'Error'}: ${err?.message ?? err}${status ? ` (HTTP ${status})` : ''}`.slice(0, 500) };
    }
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

export function locationId(location) {
  return location.split('/_history')[0].replace(/\/+$/, '').split('/').pop();
}

export function capabilitySummary(statement) {
  const patient = statement.rest[0].resource.find((r) => r.type === 'Patient');
  return {
    resourceType: statement.resourceType,
    fhirVersion: statement.fhirVersion,
    patientInteractions: patient.interaction.map((i) => i.code).sort(),
  };
}

export function entriesByMode(bundle) {
  const found = { match: [], include: [] };
  for (const entry of bundle.entry ?? []) {
    found[entry.search.mode].push(`${entry.resource.resourceType}/${entry.resource.id}`);
  }
  return found;
}

export function bundleSummary(bundle) {
  return { type: bundle.type, statuses: bundle.entry.map((e) => Number.parseInt(e.response.status, 10)) };
}

export function everythingSummary(bundle) {
  const resources = (bundle.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`).sort();
  return { type: bundle.type, resources };
}
