"""A user's pronunciation lexicon, ARPA language model and LM training text: their readers and
the one-line problems the up-front checks report.

- Lexicon (config.hmm.lexicon): Kaldi's `lexicon.txt` (`word phone phone ...`) or `lexiconp.txt`
  (`word probability phone ...`); ARPAbet phones, stress digits allowed (they are removed); words
  are lower-cased; entries of special words (`<unk>`, `!SIL`, `[noise]`) are skipped, tsasr
  pronounces <unk> itself.
- ARPA LM (config.hmm.lm_arpa): the standard format (`\\data\\`, `ngram N=count`, `\\N-grams:`
  sections, `\\end\\`); words are lower-cased like the transcripts.
- LM text (config.hmm.lm_text): one sentence per line, normalised like the transcripts (lower
  case, words separated by spaces).

Loads no Kaldi wheel (the checks run before any stage), builds no graph.
"""

from __future__ import annotations

import pathlib
import re

from tsasr.hmm import phones as phone_set

SPECIAL_PREFIXES = ("<", "!", "[")  # <unk>, !SIL, [noise]: not words of the language


class FileError(ValueError):
    """A user's lexicon, ARPA or LM text that cannot be used; the message is one line naming it."""


def _lines(path: str | pathlib.Path, what: str) -> list[str]:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FileError(f"{path}: {what} unreadable ({type(err).__name__}: {err})") from err


def read_lexicon(path: str | pathlib.Path, what: str = "hmm.lexicon") -> dict[str, list[tuple[str, ...]]]:
    """word -> its distinct pronunciations (ARPAbet without stress), in file order."""
    prons: dict[str, list[tuple[str, ...]]] = {}
    for number, line in enumerate(_lines(path, what), 1):
        fields = line.split()
        if not fields or fields[0].startswith(SPECIAL_PREFIXES):
            continue
        word, phones = fields[0].lower(), fields[1:]
        if phones and re.fullmatch(r"[0-9.]+(e-?[0-9]+)?", phones[0]):
            phones = phones[1:]  # lexiconp.txt: a probability before the phones
        if not phones:
            raise FileError(f"{path}:{number}: {what}: {word!r} has no phones (expected 'word phone phone ...')")
        pron = tuple(phone_set.strip_stress(p.upper()) for p in phones)
        unknown = [p for p, q in zip(phones, pron) if q not in phone_set.ARPABET]
        if unknown:
            raise FileError(f"{path}:{number}: {what}: {unknown[0]!r} is not an ARPAbet phone (word {word!r})")
        if pron not in prons.setdefault(word, []):
            prons[word].append(pron)
    if not prons:
        raise FileError(f"{path}: {what} has no entries")
    return prons


def read_lm_text(paths) -> list[list[str]]:
    """The sentences (lists of words) of every LM text file, blank lines left out."""
    sentences = []
    for path in paths:
        found = [line.lower().split() for line in _lines(path, "hmm.lm_text file")]
        found = [words for words in found if words]
        if not found:
            raise FileError(f"{pathlib.Path(path).expanduser()}: hmm.lm_text file has no words")
        sentences += found
    return sentences


_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")


def arpa_counts(path: str | pathlib.Path) -> dict[int, int]:
    """The n-gram counts an ARPA file's `\\data\\` header declares, read from its first lines only
    (an ARPA file can be gigabytes; the header is what the checks need)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileError(f"{path}: hmm.lm_arpa not found")
    counts: dict[int, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            started = False
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not started:
                    started = line == "\\data\\"
                    if not started and line:
                        raise FileError(f"{path}:{number}: hmm.lm_arpa is not an ARPA file (no \\data\\ header)")
                    continue
                match = _COUNT.fullmatch(line)
                if match:
                    counts[int(match[1])] = int(match[2])
                elif line:
                    break
    except (OSError, UnicodeDecodeError) as err:
        raise FileError(f"{path}: hmm.lm_arpa unreadable ({type(err).__name__}: {err})") from err
    if not counts or 1 not in counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise FileError(f"{path}: hmm.lm_arpa's \\data\\ header declares no 'ngram 1=N' .. 'ngram n=N' counts")
    return counts


def problems(hmm) -> list[str]:
    """One line per problem with the lexicon, ARPA and LM text files config.hmm names."""
    found = []
    if hmm.get("lexicon"):
        try:
            read_lexicon(hmm.lexicon)
        except FileError as err:
            found.append(str(err))
    if hmm.get("lm_arpa"):
        try:
            arpa_counts(hmm.lm_arpa)
        except FileError as err:
            found.append(str(err))
    for path in hmm.get("lm_text", ()):
        try:
            read_lm_text([path])
        except FileError as err:
            found.append(str(err))
    if hmm.get("lm_arpa") and hmm.get("lm_text"):
        found.append("hmm.lm_arpa replaces the trained LM, so hmm.lm_text would train nothing: set one of them")
    return found
