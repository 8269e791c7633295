// The scenario (scenario.py) played with @medplum/core's MedplumClient pointed at fhirflow: the FHIR
// base is the server's root (fhirUrlPath ''), no login (no token is sent; fhirflow runs with auth off
// here), no response cache (cacheTime 0) so every read is a request. Its patch form is JSON Patch.
import { MedplumClient, normalizeOperationOutcome } from '@medplum/core';
import {
  bundleSummary, capabilitySummary, entriesByMode, everythingSummary, locationId, readInput, runSteps,
} from './harness.mjs';

const input = await readInput();
const medplum = new MedplumClient({ baseUrl: `${input.base}/`, fhirUrlPath: '', cacheTime: 0 });
const system = input.system;
const state = {};

async function count(criteria) {
  return (await medplum.search('Patient', { identifier: criteria, _summary: 'count' })).total;
}

await runSteps([
  ['capabilities', async () => capabilitySummary(await medplum.get(medplum.fhirUrl('metadata')))],
  ['create', async () => {
    const created = await medplum.createResource({
      resourceType: 'Patient', identifier: [{ system, value: 'crud' }], gender: 'male',
    });
    state.patient = created;
    return { id: created.id, versionId: created.meta.versionId };
  }],
  ['read', async () => {
    const found = await medplum.readResource('Patient', state.patient.id);
    return { id: found.id, versionId: found.meta.versionId, identifierSystem: found.identifier[0].system };
  }],
  ['update', async () => {
    const updated = await medplum.updateResource({ ...state.patient, gender: 'female' });
    const again = await medplum.readResource('Patient', state.patient.id);
    return { id: again.id, versionId: updated.meta.versionId, gender: again.gender };
  }],
  ['patch', async () => {
    const patched = await medplum.patchResource('Patient', state.patient.id, [
      { op: 'replace', path: '/gender', value: 'other' },
      { op: 'add', path: '/birthDate', value: '1990-01-01' },
    ]);
    return { id: patched.id, versionId: patched.meta.versionId, gender: patched.gender, birthDate: patched.birthDate };
  }],
  ['history', async () => {
    const bundle = await medplum.readHistory('Patient', state.patient.id);
    return { type: bundle.type, versions: bundle.entry.map((e) => e.resource.meta.versionId) };
  }],
  ['delete', async () => {
    await medplum.deleteResource('Patient', state.patient.id);
    try {
      await medplum.readResource('Patient', state.patient.id);
    } catch (err) {
      // MedplumClient throws an OperationOutcomeError carrying the server's OperationOutcome, not the status.
      return { issueCode: normalizeOperationOutcome(err).issue[0].code };
    }
    return { error: 'the deleted resource is still read' };
  }],
  ['conditional_create', async () => {
    const criteria = `${system}|conditional-create`;
    const body = { resourceType: 'Patient', identifier: [{ system, value: 'conditional-create' }] };
    const first = await medplum.createResourceIfNoneExist(body, `identifier=${criteria}`);
    const second = await medplum.createResourceIfNoneExist(body, `identifier=${criteria}`);
    return { firstId: first.id, secondId: second.id, matches: await count(criteria) };
  }],
  ['conditional_update', async () => {
    const criteria = `${system}|conditional-update`;
    const body = { resourceType: 'Patient', identifier: [{ system, value: 'conditional-update' }] };
    const first = await medplum.upsertResource({ ...body, gender: 'male' }, { identifier: criteria });
    const second = await medplum.upsertResource({ ...body, gender: 'female' }, { identifier: criteria });
    return {
      firstId: first.id,
      firstVersion: first.meta.versionId,
      secondId: second.id,
      secondVersion: second.meta.versionId,
      gender: second.gender,
      matches: await count(criteria),
    };
  }],
  ['conditional_create_ambiguous', async () => {
    const population = input.populationSystem;
    try {
      await medplum.createResourceIfNoneExist(
        { resourceType: 'Patient', identifier: [{ system: population, value: 'ambiguous' }] },
        `identifier=${population}|`,
      );
    } catch (err) {
      return { issueCode: normalizeOperationOutcome(err).issue[0].code };
    }
    return { error: 'created although the criteria match the whole population' };
  }],
  ['search_paging', async () => {
    const ids = [];
    let pages = 0;
    // searchResourcePages follows each Bundle's next link to the end.
    for await (const page of medplum.searchResourcePages('Patient', {
      identifier: `${input.populationSystem}|`, _count: input.pageSize,
    })) {
      pages += 1;
      for (const resource of page) ids.push(resource.id);
    }
    return { ids, pages };
  }],
  ['include', async () => entriesByMode(await medplum.search('Observation', {
    subject: `Patient/${input.probePatientId}`, _include: 'Observation:subject',
  }))],
  ['batch', async () => bundleSummary(await medplum.executeBatch(input.batch))],
  ['transaction', async () => {
    const answer = await medplum.executeBatch(input.transaction);
    const [patientId, observationId] = answer.entry.map((e) => locationId(e.response.location));
    const observation = await medplum.readResource('Observation', observationId);
    state.everything = patientId;
    return { ...bundleSummary(answer), patientId, observationId, observationSubject: observation.subject.reference };
  }],
  ['everything', async () => everythingSummary(await medplum.readPatientEverything(state.everything))],
]);
