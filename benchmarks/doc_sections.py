"""Generated sections of a Markdown file: the text between a pair of marker lines, replaced in
place (RESULTS.md's tables, its OOD tables, the README's summary)."""


def insert(doc_path, text, begin, end_marker):
    """Replace what lies between the markers; False (file untouched) when they are missing."""
    with open(doc_path, encoding="utf-8") as fh:
        doc = fh.read()
    if doc.count(begin) != 1 or doc.count(end_marker) != 1 or doc.index(begin) > doc.index(end_marker):
        return False
    start, end = doc.index(begin) + len(begin), doc.index(end_marker)
    new = doc[:start] + "\n" + text + "\n" + doc[end:]
    if new != doc:
        with open(doc_path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return True
