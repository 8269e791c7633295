// The scenario (scenario.py) played with fhir-kit-client's own API. Its patch form is JSON Patch.
import { Client } from 'fhir-kit-client';
import {
  bundleSummary, capabilitySummary, entriesByMode, everythingSummary, locationId, readInput, runSteps,
} from './harness.mjs';

const input = await readInput();
const client = new Client({ baseUrl: input.base });
const system = input.system;
const state = {};

async function count(criteria) {
  const bundle = await client.search({ resourceType: 'Patient', searchParams: { identifier: criteria, _summary: 'count' } });
  return bundle.total;
}

await runSteps([
  ['capabilities', async () => capabilitySummary(await client.capabilityStatement())],
  ['create', async () => {
    const created = await client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', identifier: [{ system, value: 'crud' }], gender: 'male' },
    });
    state.patient = created;
    return { id: created.id, versionId: created.meta.versionId };
  }],
  ['read', async () => {
    const found = await client.read({ resourceType: 'Patient', id: state.patient.id });
    return { id: found.id, versionId: found.meta.versionId, identifierSystem: found.identifier[0].system };
  }],
  ['update', async () => {
    const updated = await client.update({
      resourceType: 'Patient', id: state.patient.id, body: { ...state.patient, gender: 'female' },
    });
    const again = await client.read({ resourceType: 'Patient', id: state.patient.id });
    return { id: again.id, versionId: updated.meta.versionId, gender: again.gender };
  }],
  ['patch', async () => {
    const patched = await client.patch({
      resourceType: 'Patient',
      id: state.patient.id,
      jsonPatch: [
        { op: 'replace', path: '/gender', value: 'other' },
        { op: 'add', path: '/birthDate', value: '1990-01-01' },
      ],
    });
    return { id: patched.id, versionId: patched.meta.versionId, gender: patched.gender, birthDate: patched.birthDate };
  }],
  ['history', async () => {
    const bundle = await client.resourceHistory({ resourceType: 'Patient', id: state.patient.id });
    return { type: bundle.type, versions: bundle.entry.map((e) => e.resource.meta.versionId) };
  }],
  ['delete', async () => {
    await client.delete({ resourceType: 'Patient', id: state.patient.id });
    try {
      await client.read({ resourceType: 'Patient', id: state.patient.id });
    } catch (err) {
      const outcome = typeof err.response.data === 'string' ? JSON.parse(err.response.data) : err.response.data;
      return { status: err.response.status, issueCode: outcome.issue[0].code };
    }
    return { error: 'the deleted resource is still read' };
  }],
  ['conditional_create', async () => {
    const criteria = `${system}|conditional-create`;
    const create = () => client.create({
      resourceType: 'Patient',
      body: { resourceType: 'Patient', identifier: [{ system, value: 'conditional-create' }] },
      options: { headers: { 'If-None-Exist': `identifier=${criteria}` } },
    });
    const first = await create();
    const second = await create();
    return { firstId: first.id, secondId: second.id, matches: await count(criteria) };
  }],
  ['conditional_update', async () => {
    const criteria = `${system}|conditional-update`;
    const body = { resourceType: 'Patient', identifier: [{ system, value: 'conditional-update' }] };
    const update = (gender) => client.update({
      resourceType: 'Patient', searchParams: { identifier: criteria }, body: { ...body, gender },
    });
    const first = await update('male');
    const second = await update('female');
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
      await client.create({
        resourceType: 'Patient',
        body: { resourceType: 'Patient', identifier: [{ system: population, value: 'ambiguous' }] },
        options: { headers: { 'If-None-Exist': `identifier=${population}|` } },
      });
    } catch (err) {
      const outcome = typeof err.response.data === 'string' ? JSON.parse(err.response.data) : err.response.data;
      return { status: err.response.status, issueCode: outcome.issue[0].code };
    }
    return { error: 'created although the criteria match the whole population' };
  }],
  ['search_paging', async () => {
    let bundle = await client.search({
      resourceType: 'Patient', searchParams: { identifier: `${input.populationSystem}|`, _count: input.pageSize },
    });
    const ids = [];
    let pages = 0;
    while (bundle) {
      pages += 1;
      for (const entry of bundle.entry ?? []) ids.push(entry.resource.id);
      bundle = await client.nextPage({ bundle }); // undefined after the last page
    }
    return { ids, pages };
  }],
  ['include', async () => entriesByMode(await client.search({
    resourceType: 'Observation',
    searchParams: { subject: `Patient/${input.probePatientId}`, _include: 'Observation:subject' },
  }))],
  ['batch', async () => bundleSummary(await client.batch({ body: input.batch }))],
  ['transaction', async () => {
    const answer = await client.transaction({ body: input.transaction });
    const [patientId, observationId] = answer.entry.map((e) => locationId(e.response.location));
    const observation = await client.read({ resourceType: 'Observation', id: observationId });
    state.everything = patientId;
    return { ...bundleSummary(answer), patientId, observationId, observationSubject: observation.subject.reference };
  }],
  ['everything', async () => everythingSummary(await client.operation({
    name: '$everything', resourceType: 'Patient', id: state.everything, method: 'get',
  }))],
]);
