"""Whether an element repeats, for FHIRPath Patch ``add`` and part-built values.

When ``add`` creates an element that is not there yet, the JSON shape depends on the
element's cardinality: ``"telecom": [{...}]`` but ``"maritalStatus": {...}`` (R4
json.html: an element with max ``*`` is always an array). fhirpathpy's model has types but
no cardinalities, so the default rule answers from tables derived from the element
definitions (``snapshot.element[].max``) of every R4 (4.0.1) resource and complex datatype
StructureDefinition of the core package:

* ``_ALWAYS``: element names that are ``0..*`` wherever R4 defines them (``extension``,
  ``coding``, ``telecom``, ``given``...);
* ``_EXCEPT_UNDER``: names that repeat directly under most resources and datatypes, with
  the types under which they do not (``identifier`` is single in ``Reference``...);
* ``_ONLY_UNDER``: names that repeat directly under a few types only (``Patient.name``
  repeats, ``Organization.name`` does not);
* ``_NESTED``: the repeating backbone paths (``Patient.contact.relationship``) whose name
  is not in ``_ALWAYS``.

Together they reproduce the R4 max of every element path in those snapshots. Paths are
definition paths as the locator builds them: datatype children under the type name
(``HumanName.prefix``, ``Meta.profile``), backbone children under their element path
(``Patient.contact.address``). Unknown elements (not R4, or misspelt) are created single;
a caller with other definitions passes its own rule as ``repeats=``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

RepeatsRule = Callable[[str], bool]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _table(text: str) -> dict[str, frozenset[str]]:
    """Parse "name: Type Type..." lines; a name may continue on several lines."""
    table: dict[str, set[str]] = {}
    for line in text.strip().splitlines():
        name, _, types = line.partition(":")
        table.setdefault(name.strip(), set()).update(types.split())
    return {name: frozenset(types) for name, types in table.items()}


_ALWAYS: Final = _names(
    """
    about addItem additionalCharacteristic additionalClassification additionalIdentifier additionalInstruction
    addresses adjudication administration administrationGuidelines agent aggregation allergyIntolerance
    allowedResponse alternateMaterial alternative anchor answerOption application appliesTo areaUnderCurve arm
    asset associatedMedication attachedDocument attester authorizationSupporting authorizingPrescription
    availableTime batchIdentifier benefit benefitBalance bodysite calibration capability careTeam
    careTeamSequence causality certainty certaintySubcomponent chain characteristics classHistory clinicalTrial
    codeFilter codeSystem coding communication communicationRequest comorbidity compartment complication
    complicationDetail concept conclusionCode constraint contained containedInstance contains contextInvariant
    contextLinkId contract contraindicatedVaccineCode contraindication contributor control copolymerConnectivity
    costToBeneficiary countryLanguage countryOfOrigin coverageArea crossReference dataRequirement dateCriterion
    dateFilter dayOfWeek daysOfWeek decisionMode definitionCanonical definitionUri degreeOfPolymerisation
    dependsOn derivedFromUri designation detectedIssue diagnosisSequence dietPreference discriminator
    disulfideLinkage dosageInstruction doseAndRate doseStatusReason drugCharacteristic dynamicValue editor
    education effectEstimate eligibility enableWhen endorser enrollment entry episodeOfCare evaluatedResource
    evaluationMessage eventHistory evidence exception excludeFoodModifier exposureVariant extension fMeasure
    filter financial finding fixture fluidConsistencyType focalDevice followUp foodPreferenceModifier
    forecastReason fractionDescription friendly geneElement generalCost generalPractitioner geographicalLocation
    given global goal goalId graph grouping guarantor handling hasMember header healthcareService
    hoursOfOperation image imagingStudy implementationGuide implicated import imports imprint inResponseTo
    include informationSequence ingredient initial input instantiates insurance intendedRoute interactant
    interpretation interpreter investigation isotope issue jurisdictionalAuthorization keyword kinetics
    languageCode legal lensSpecification lethalDose50 library line lineItem linkage locationCode
    locationQualifier locationReference manifestation manufacturedItem manufacturingBusinessOperation mapping
    marketingStatus masterFile medicineClassification medium messaging modification modifierExtension moiety
    monitoringProgram monograph monomerSet namePart notAvailable note noteNumber numFN numFP numTP nutrient
    objective observationRequirement observationResultRequirement official orderDetail otherCharacteristics
    otherTherapy outcomeCode outcomeCodeableConcept outcomeReference output overload packageItem
    packagedMedicinalProduct param parameter parameterName parentSubstanceId parentSubstanceName partDescription
    participant participantType patchFormat patientCharacteristics patientPreparation payloadMimeType
    payloadType payor performerLinkId periodType permittedDataType pharmaceuticalProduct plan pointer policy
    preAuthRefPeriod precisionEstimate prediction presentedForm priceComponent priorRequest prism problem
    procedureCode procedureSequence process processNote processing productClassification productType
    prognosisCodeableConcept prognosisReference program programCode programEligibility progress propertyGroup
    protocolApplied purposeOfEvent purposeOfUse pushTypeAvailable qualifiedInterval qualifiers quality rating
    reaction reasonLinkId recommendation referenceDocument referencePolicy referenceStrength referencedFrom
    referralMethod referralRequest regulatory rejectionCriterion related relatedAction relatedArtifact
    relatedEntry relatedMedicationKnowledge relatesTo relevantHistory replaces report repository requestHeader
    requestedPeriod requesterLinkId responsibleParty rest resultingCondition resultsByExposure
    resultsInterpreter reviewer routeOfAdministration safety searchInclude searchRevInclude section
    securityLabel securityLabelNumber sensitivity service serviceCategory serviceProvisionCode shelfLifeStorage
    signer slot sort specialArrangement specialCourtesy specialDesignation specialMeasures
    specialPrecautionsForStorage specialization specialty specificCost specifiedSubstance specimenRequirement
    stage startingMaterial statusHistory step storage stratifier stratum structuralRepresentation
    structureVariant subDetail subSite subdetailSequence subjectMedicalHistory subjectType subpotentReason
    subtype suffix sugar supplement supplementalData supportedMessage supportedProfile supportingImmunization
    supportingInfo supportingInfoSequence supportingPatientInformation suspectEntity synonym tag targetLocation
    targetProfile targetSpecies team telecom template test texture therapeuticIndication timeOfDay
    totalPriceComponent trigger typeReference typeTested udi udiCarrier udiDeviceIdentifier undesirableEffect
    uniqueId usageContext useContext usePeriod usedCode usedReference validationProcess validator valueCode
    valueQuantity valuedItem variant verification withdrawalPeriod workflow
    """
)

_EXCEPT_UNDER: Final = _table(
    """
    account: Invoice
    action: AuditEvent
    activity: Provenance
    actor: AppointmentResponse
    address: Endpoint Location
    alias:
    applicability:
    appointment: AppointmentResponse
    author: Annotation Basic CarePlan Contract DetectedIssue Flag Linkage MessageHeader
    author: QuestionnaireResponse RequestGroup
    basedOn: RiskAssessment
    basis:
    bodySite: DeviceUseStatement Media Observation
    category: DeviceMetric MedicationAdministration MedicationDispense MedicationStatement
    category: MessageDefinition Procedure SupplyRequest
    characteristic:
    classification: MedicinalProductUndesirableEffect
    color: DeviceMetric
    component:
    condition: RiskAssessment TriggerDefinition
    contact:
    container:
    content: CodeSystem Media
    cost:
    coverage: EnrollmentRequest
    derivedFrom: SearchParameter
    destination: MedicationDispense SupplyDelivery
    detail: DetectedIssue
    deviceName: Media
    diagnosis:
    document: RelatedArtifact
    dosage: MedicationAdministration
    endpoint:
    entity:
    error: Subscription
    example:
    focus: Task
    format:
    gene:
    group:
    identifier: AdverseEvent Bundle Composition ConceptMap MedicinalProductIngredient ProductShelfLife
    identifier: QuestionnaireResponse Reference SpecimenDefinition SubstanceSpecification TestReport
    identifier: TestScript
    instance: OperationDefinition
    instantiatesCanonical: Contract Task
    instantiatesUri: Contract Task
    item: SupplyRequest
    jurisdiction: MarketingStatus
    link:
    material:
    media:
    member:
    mitigation: RiskAssessment
    modality: Media
    modifier:
    molecularWeight:
    mustSupport: ElementDefinition
    network: Coverage
    origin: SampledData
    parent: Device DeviceMetric RiskAssessment
    partOf: Account Encounter Location Organization
    payload:
    performer: DeviceRequest GuidanceResponse MedicationRequest MolecularSequence RiskAssessment
    photo: HealthcareService Person
    population: EffectEvidenceSynthesis ResearchDefinition RiskEvidenceSynthesis
    prefix:
    primarySource: Immunization
    procedure: MedicinalProductAuthorization
    profile: ActivityDefinition GraphDefinition ParameterDefinition
    property:
    protocol:
    qualification:
    reason: MessageHeader Subscription
    reasonCode: Task
    reasonReference: Task
    receiver:
    recipient: Invoice PaymentNotice
    referenceRange: SubstanceAmount
    relationship: Coverage FamilyMemberHistory
    repeat: Timing
    representation:
    resource: RelatedArtifact
    rule:
    security:
    series: ImmunizationEvaluation
    serviceType: Encounter
    signature: Bundle
    site: Dosage Immunization
    specimen: MolecularSequence Observation
    structure: SubstanceSpecification
    study: ResearchSubject
    subunit:
    supplier: SupplyDelivery
    supportingInformation:
    target: ConceptMap
    term:
    topic: Communication Contract
    total: Bundle Claim
    variable:
    """
)

_ONLY_UNDER: Final = _table(
    """
    authority: Contract
    base: SearchParameter
    class: Coverage
    code: ElementDefinition OrganizationAffiliation PractitionerRole Questionnaire SubstanceSpecification
    collection: SpecimenDefinition
    comment: ResearchDefinition ResearchElementDefinition
    comparator: SearchParameter
    context: StructureDefinition
    country: MedicinalProductAuthorization
    data: TriggerDefinition
    definition: Measure
    device: MedicationAdministration MedicinalProductPharmaceutical
    domain: Contract
    event: Composition Timing
    fhirVersion: ImplementationGuide
    location: Encounter HealthcareService OrganizationAffiliation PractitionerRole ResearchStudy
    managingOrganization: CareTeam
    manufacturer: MedicinalProductIngredient MedicinalProductManufactured MedicinalProductPackaged
    name: MedicinalProduct Patient Person Practitioner RelatedPerson SubstanceSpecification
    organization: Consent
    outcome: Evidence
    performerType: Task
    preAuthRef: ExplanationOfBenefit
    purpose: CoverageEligibilityRequest CoverageEligibilityResponse
    request: BiologicallyDerivedProduct Specimen
    result: DiagnosticReport
    source: SubstanceSpecification
    statusReason: Device MedicationAdministration MedicationStatement
    subType: Contract
    subject: Account Contract MedicinalProductContraindication MedicinalProductIndication
    subject: MedicinalProductInteraction MedicinalProductPackaged MedicinalProductUndesirableEffect
    type: ElementDefinition Encounter EpisodeOfCare HealthcareService InsurancePlan Location Measure
    type: Organization Signature
    version: Device DeviceDefinition
    """
)

_NESTED: Final = _names(
    """
    Appointment.participant.type AuditEvent.agent.role AuditEvent.entity.detail AuditEvent.source.type
    Bundle.entry.link CapabilityStatement.messaging.endpoint CapabilityStatement.rest.interaction
    CapabilityStatement.rest.operation CapabilityStatement.rest.resource
    CapabilityStatement.rest.resource.interaction CapabilityStatement.rest.resource.operation
    CapabilityStatement.rest.resource.searchParam CapabilityStatement.rest.searchParam
    CarePlan.activity.detail.instantiatesCanonical CarePlan.activity.detail.instantiatesUri
    CarePlan.activity.detail.performer CarePlan.activity.detail.reasonCode
    CarePlan.activity.detail.reasonReference CareTeam.participant.role
    ChargeItemDefinition.propertyGroup.applicability Claim.diagnosis.type Claim.insurance.preAuthRef
    Claim.item.detail Claim.item.detail.modifier Claim.item.detail.subDetail.modifier Claim.item.encounter
    Claim.item.modifier Claim.procedure.type ClaimResponse.addItem.detail ClaimResponse.addItem.detail.modifier
    ClaimResponse.addItem.detail.subDetail.modifier ClaimResponse.addItem.detailSequence
    ClaimResponse.addItem.itemSequence ClaimResponse.addItem.modifier ClaimResponse.addItem.provider
    ClaimResponse.item.detail ClinicalImpression.investigation.item CodeSystem.concept.property
    CodeSystem.filter.operator Composition.event.code Composition.event.detail Composition.section.author
    ConceptMap.group.element ConceptMap.group.element.target ConceptMap.group.element.target.product
    Condition.evidence.code Condition.evidence.detail Condition.stage.assessment Consent.provision.action
    Consent.provision.actor Consent.provision.class Consent.provision.code Consent.provision.data
    Consent.provision.provision Consent.provision.purpose Contract.signer.signature Contract.term.action
    Contract.term.action.linkId Contract.term.action.performerType Contract.term.action.reason
    Contract.term.action.reasonCode Contract.term.action.reasonReference Contract.term.action.requester
    Contract.term.action.subject Contract.term.action.subject.reference Contract.term.asset.answer
    Contract.term.asset.context Contract.term.asset.context.code Contract.term.asset.linkId
    Contract.term.asset.period Contract.term.asset.type Contract.term.asset.valuedItem.linkId
    Contract.term.group Contract.term.offer.answer Contract.term.offer.identifier Contract.term.offer.linkId
    Contract.term.offer.party Contract.term.offer.party.reference Contract.term.securityLabel.category
    Contract.term.securityLabel.number CoverageEligibilityRequest.item.detail
    CoverageEligibilityRequest.item.diagnosis CoverageEligibilityRequest.item.modifier
    CoverageEligibilityResponse.insurance.item CoverageEligibilityResponse.insurance.item.modifier
    DataRequirement.codeFilter.code DetectedIssue.evidence.code DetectedIssue.evidence.detail
    DeviceDefinition.capability.description DocumentReference.context.encounter DocumentReference.context.event
    ElementDefinition.type.profile Encounter.participant.type ExampleScenario.instance.version
    ExplanationOfBenefit.addItem.detail ExplanationOfBenefit.addItem.detail.modifier
    ExplanationOfBenefit.addItem.detail.subDetail.modifier ExplanationOfBenefit.addItem.detailSequence
    ExplanationOfBenefit.addItem.itemSequence ExplanationOfBenefit.addItem.modifier
    ExplanationOfBenefit.addItem.provider ExplanationOfBenefit.addItem.subDetailSequence
    ExplanationOfBenefit.diagnosis.type ExplanationOfBenefit.insurance.preAuthRef
    ExplanationOfBenefit.item.detail ExplanationOfBenefit.item.detail.modifier
    ExplanationOfBenefit.item.detail.subDetail.modifier ExplanationOfBenefit.item.encounter
    ExplanationOfBenefit.item.modifier ExplanationOfBenefit.procedure.type GraphDefinition.link.target
    GraphDefinition.link.target.link ImagingStudy.series.endpoint ImagingStudy.series.instance
    ImagingStudy.series.performer ImagingStudy.series.specimen Immunization.protocolApplied.targetDisease
    ImmunizationRecommendation.recommendation.vaccineCode ImplementationGuide.definition.page.page
    ImplementationGuide.definition.resource ImplementationGuide.definition.resource.fhirVersion
    ImplementationGuide.manifest.other ImplementationGuide.manifest.page ImplementationGuide.manifest.resource
    InsurancePlan.coverage.benefit.limit InsurancePlan.coverage.network InsurancePlan.plan.identifier
    InsurancePlan.plan.network InsurancePlan.plan.specificCost.benefit.cost Measure.group.population
    Measure.group.stratifier.component Measure.supplementalData.usage MeasureReport.group.population
    MeasureReport.group.stratifier.code MeasureReport.group.stratifier.stratum.component
    MeasureReport.group.stratifier.stratum.population MedicationDispense.substitution.reason
    MedicationKnowledge.administrationGuidelines.dosage
    MedicationKnowledge.administrationGuidelines.dosage.dosage
    MedicationKnowledge.administrationGuidelines.patientCharacteristics.value
    MedicationKnowledge.medicineClassification.classification MedicationKnowledge.regulatory.schedule
    MedicationKnowledge.regulatory.substitution MedicationKnowledge.relatedMedicationKnowledge.reference
    MedicinalProduct.manufacturingBusinessOperation.manufacturer MedicinalProduct.specialDesignation.identifier
    MedicinalProductAuthorization.jurisdictionalAuthorization.identifier
    MedicinalProductAuthorization.jurisdictionalAuthorization.jurisdiction
    MedicinalProductIngredient.specifiedSubstance.strength
    MedicinalProductIngredient.specifiedSubstance.strength.country
    MedicinalProductIngredient.specifiedSubstance.strength.referenceStrength.country
    MedicinalProductIngredient.substance.strength MedicinalProductPackaged.packageItem.device
    MedicinalProductPackaged.packageItem.identifier MedicinalProductPackaged.packageItem.manufacturer
    MedicinalProductPackaged.packageItem.material MolecularSequence.quality.roc.precision
    MolecularSequence.quality.roc.score NutritionOrder.oralDiet.schedule NutritionOrder.oralDiet.type
    NutritionOrder.supplement.schedule Observation.component.referenceRange OperationDefinition.parameter.part
    OperationOutcome.issue.expression OperationOutcome.issue.location Parameters.parameter.part
    Patient.contact.relationship PlanDefinition.action.action PlanDefinition.action.code
    PlanDefinition.action.condition PlanDefinition.action.documentation PlanDefinition.action.reason
    PlanDefinition.goal.documentation PlanDefinition.goal.target Practitioner.qualification.identifier
    Provenance.agent.role Questionnaire.item.code Questionnaire.item.item QuestionnaireResponse.item.answer
    QuestionnaireResponse.item.answer.item QuestionnaireResponse.item.item RequestGroup.action.action
    RequestGroup.action.code RequestGroup.action.condition RequestGroup.action.documentation
    Specimen.container.identifier Specimen.processing.additive SpecimenDefinition.typeTested.container.additive
    StructureDefinition.differential.element StructureDefinition.snapshot.element StructureMap.group.rule
    StructureMap.group.rule.dependent StructureMap.group.rule.dependent.variable StructureMap.group.rule.rule
    StructureMap.group.rule.source StructureMap.group.rule.target StructureMap.group.rule.target.listMode
    SubstancePolymer.repeat.repeatUnit SubstanceReferenceInformation.classification.source
    SubstanceReferenceInformation.gene.source SubstanceReferenceInformation.geneElement.source
    SubstanceReferenceInformation.target.source SubstanceSourceMaterial.organism.author
    SubstanceSpecification.code.source SubstanceSpecification.name.domain
    SubstanceSpecification.name.jurisdiction SubstanceSpecification.name.language
    SubstanceSpecification.name.source SubstanceSpecification.name.translation
    SubstanceSpecification.relationship.source SubstanceSpecification.structure.representation
    SubstanceSpecification.structure.source Task.restriction.recipient
    TerminologyCapabilities.codeSystem.version TerminologyCapabilities.codeSystem.version.filter.op
    TerminologyCapabilities.codeSystem.version.language TerminologyCapabilities.codeSystem.version.property
    TestReport.setup.action TestReport.teardown.action TestReport.test.action
    TestScript.metadata.capability.link TestScript.metadata.capability.origin TestScript.metadata.link
    TestScript.setup.action TestScript.teardown.action TestScript.test.action Timing.repeat.when
    ValueSet.compose.exclude ValueSet.compose.include.valueSet
    VerificationResult.primarySource.communicationMethod VerificationResult.primarySource.type
    """
)


def default_repeats(element_path: str) -> bool:
    """Whether the R4 element at ``element_path`` has max ``*`` (see the module docstring)."""
    parent, _, name = element_path.rpartition(".")
    if name in _ALWAYS:
        return True
    if "." in parent:  # a backbone element's child
        return element_path in _NESTED
    if name in _EXCEPT_UNDER:
        return parent not in _EXCEPT_UNDER[name]
    return parent in _ONLY_UNDER.get(name, frozenset())
