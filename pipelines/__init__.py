"""Pure mapping: HL7 v2 ORU^R01 and DICOM SR to HL7 Europe Imaging Report (FHIR R5). No I/O in here."""

__all__: list[str] = []
