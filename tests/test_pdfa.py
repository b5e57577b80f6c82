"""report.pdf is PDF/A-3b with the evidence embedded byte for byte, and its metadata set."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from pypdf import PdfReader

from auditor.outputs import ATTACHED

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PDFAID = "http://www.aiim.org/pdfa/ns/id/"


def test_the_pdf_is_pdf_a_3b_and_carries_the_evidence(audit: tuple[object, Path]) -> None:
    folder = audit[1]
    reader = PdfReader(folder / "report.pdf")

    raw = reader.trailer["/Root"]["/Metadata"].get_object().get_data()
    descriptions = ElementTree.fromstring(raw).iter(f"{{{RDF}}}Description")
    identification = {
        key.split("}")[1]: value
        for node in descriptions
        for key, value in node.attrib.items()
        if key.startswith(f"{{{PDFAID}}}")
    }
    assert identification == {"part": "3", "conformance": "B"}
    intents = reader.trailer["/Root"]["/OutputIntents"]
    assert "sRGB" in str(intents[0]["/OutputConditionIdentifier"])
    associated = {spec.get_object()["/F"]: spec.get_object()["/AFRelationship"]
                  for spec in reader.trailer["/Root"]["/AF"]}  # fmt: skip
    assert associated == dict.fromkeys(ATTACHED, "/Data")
    assert set(reader.attachments) == set(ATTACHED)
    for name, contents in reader.attachments.items():
        assert contents == [(folder / name).read_bytes()], name
    info = reader.metadata
    assert info is not None
    assert info.title == "Model audit: tiny.pt"
    assert info.author is not None and info.author.startswith("Auditor ")
    assert info.subject is not None and "tiny.pt on 12 validation images" in info.subject
    assert "model audit" in str(info.get("/Keywords"))
    assert info.creation_date is not None
