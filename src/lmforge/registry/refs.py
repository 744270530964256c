"""One resolver for every model reference: what a user, a recipe or a server config names.

A reference is a catalogue name (``minilm-l6``), a local Hugging Face folder, or a registered
``NAME``, ``NAME:vN`` or ``NAME:production``. The caller says which kind of model it wants —
an encoder, a decoder, a classifier or an assistant — and gets a :class:`ResolvedModel`: where
it came from, what it is, its registry version if any, and (by :meth:`ResolvedModel.locate`)
the folder to load. A wrong kind or an unknown name fails here, in one line naming the fix,
before anything is loaded. The CLI, the assistant, the server and the tasks all resolve through
:func:`resolve_model`.

It lives in the registry stage because it needs both the catalogue (``models/``, the stage
below) and the registered versions (here); ``models/`` could not hold it without importing
upward, and every caller sits above this stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.errors import ModelNotFoundError
from lmforge.models.catalogue import CATALOGUE, CatalogueEntry, ResolvedBase, passage_prefix
from lmforge.models.meta import (
    META_FILE,
    ClassificationMeta,
    ModelMeta,
    PretrainMeta,
    SimilarityMeta,
    read_model_meta,
)
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.registry.store import ModelVersion, Registry, parse_ref
from lmforge.settings import Settings

__all__ = ["KINDS", "Kind", "ResolvedModel", "Source", "resolve_base", "resolve_model"]

Kind = Literal["encoder", "decoder", "classifier", "assistant"]
Source = Literal["catalogue", "folder", "registry"]

# The task a registered model of each kind was made by (the registry row's ``task``).
KINDS: dict[Kind, str] = {
    "encoder": "similarity",
    "decoder": "generation",
    "classifier": "classification",
    "assistant": "assistant",
}
_KIND_OF_TASK: dict[str, Kind] = {task: kind for kind, task in KINDS.items()}
# Kinds a catalogue entry or a plain Hugging Face folder can be; the others are only registered.
_FOLDER_KINDS: tuple[Kind, ...] = ("encoder", "decoder")


@dataclass(frozen=True)
class ResolvedModel:
    """A reference, resolved: what it is and where its weights are (nothing loaded yet)."""

    ref: str  # how to name it: the catalogue name, the folder as given, or NAME:vN
    kind: Kind  # what it is (one of the kinds the caller asked for)
    source: Source
    folder: Path | None  # a local or registered folder; None for a catalogue model until located
    entry: CatalogueEntry | None = None  # the catalogue entry, for a catalogue model
    version: ModelVersion | None = None  # the registered version, for a registered model
    text_prefix: str = ""  # what the model was trained to see before a query, e.g. "query: "
    passage_prefix: str = ""  # ... and before a document (e5: "passage: ")

    def locate(self, cache_dir: Path, progress: ProgressReporter | None = None) -> Path:
        """The folder to load from. A catalogue model is made ready here (converted once into
        ``cache_dir``, which can take a minute, reported to `progress`); any other is returned
        as it is."""
        if self.entry is not None:
            return self.entry.locate(cache_dir, progress or SilentProgress())
        if self.folder is None:  # resolve_model gives every non-catalogue model its folder
            raise AssertionError(f"{self.ref} was resolved without a folder")
        return self.folder


def resolve_model(
    ref: str,
    wanted: Kind | tuple[Kind, ...],
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    registered: bool = True,
    folders: bool = True,
) -> ResolvedModel:
    """Resolve ``ref`` to a model of a ``wanted`` kind (or of one of several), cheaply: nothing
    is loaded or converted, and the registry is opened only for a name that is neither a
    catalogue model nor a folder.

    ``registry`` reuses an open registry (else one for ``settings`` is opened when needed);
    ``registered=False`` leaves registered versions out (a recipe's base model);
    ``folders=False`` leaves local folders out (a name in an HTTP request must never make the
    server read a path of the client's choosing). Raises ModelNotFoundError for an unknown
    name or a model of another kind — with the registry's own message when only a registered
    model could have been meant, or the name is registered but not that version or stage —
    and ModelUnavailableError for a folder whose lmforge.json cannot be read.
    """
    kinds = (wanted,) if isinstance(wanted, str) else wanted
    # a classifier or an assistant is only ever registered: no folder can be one
    folders = folders and any(k in _FOLDER_KINDS for k in kinds)
    entry = CATALOGUE.get(ref)
    if entry is not None:
        return _catalogue(entry, kinds)
    folder = _expand(ref)
    if folders and (folder / "config.json").is_file():
        return _folder(ref, folder.resolve(), kinds)
    if registered:
        registry = registry or Registry(settings)
        try:
            version = registry.get(ref)
        except ModelNotFoundError:
            # The registry's own message where only a registered model could have been meant,
            # or where the name is registered (no such version or stage): it names the fix.
            if not folders or _is_registered_name(registry, ref):
                raise
        else:
            return _registered(version, kinds)
    if folders and folder.is_dir():
        raise ModelNotFoundError(
            f"folder {folder} has no config.json, so it is not a Hugging Face model",
            "point at a folder saved with save_pretrained()",
        )
    raise _unknown(ref, kinds, registered, folders)


def _expand(ref: str) -> Path:
    """``ref`` as a path, ``~`` expanded; "~name" for no such user (or any name in a request)
    stays as written — pathlib raises RuntimeError there, which must not reach a caller."""
    try:
        return Path(ref).expanduser()
    except RuntimeError:
        return Path(ref)


def resolve_base(
    ref: str,
    wanted: Kind,
    cache_dir: Path,
    progress: ProgressReporter | None = None,
    settings: Settings | None = None,
) -> ResolvedBase:
    """A recipe's ``model.base`` — a catalogue model, a local Hugging Face folder or a
    registered ``pretrain`` version (``NAME[:vN]``) of the ``wanted`` kind — located for
    training: a catalogue model is converted once into ``cache_dir``. Versions of other tasks
    are not bases: a classifier's head or a tuned chat model is not where a recipe starts."""
    try:
        found = resolve_model(ref, wanted, registered=False)
    except ModelNotFoundError:
        version = _registered_pretrain(ref, settings)
        if version is None:
            raise
        found = _registered(version, (wanted,))
        return ResolvedBase(found.ref, found.locate(cache_dir, progress), None, found.text_prefix)
    return ResolvedBase(found.ref, found.locate(cache_dir, progress), found.entry)


def _registered_pretrain(ref: str, settings: Settings | None) -> ModelVersion | None:
    """The registered version ``ref`` names when it is a pretrain version; None when the
    registry has no such version; a one-line error for a version of another task."""
    try:
        parse_ref(ref)
        version = Registry(settings).get(ref)
    except ModelNotFoundError:
        return None
    if version.task != "pretrain":
        raise ModelNotFoundError(
            f"{version.ref} (task {version.task}) is not a base model",
            "use a catalogue model, a Hugging Face folder or a registered pretrain version",
        )
    return version


def _catalogue(entry: CatalogueEntry, kinds: tuple[Kind, ...]) -> ResolvedModel:
    if entry.kind not in kinds:
        names = _catalogue_names(kinds)
        raise ModelNotFoundError(
            f"{entry.name} is {_a(entry.kind)}, not {_either(kinds)}",
            f"use one of: {', '.join(names)}" if names else _registered_fix(kinds),
        )
    entry.check_installed()  # an optional model (gemma3-270m) fails here, before it is needed
    return ResolvedModel(
        entry.name,
        entry.kind,
        "catalogue",
        None,
        entry=entry,
        text_prefix=entry.text_prefix,
        passage_prefix=passage_prefix(entry.text_prefix),
    )


def _folder(ref: str, folder: Path, kinds: tuple[Kind, ...]) -> ResolvedModel:
    """A local Hugging Face folder: trusted to be the kind wanted, unless its lmforge.json (a
    model lmforge made) says it is another."""
    meta = _read_meta(folder)
    task = meta.task if meta is not None else None
    made = _KIND_OF_TASK.get(task) if task is not None else None
    if isinstance(meta, PretrainMeta):
        made = meta.kind
    if made is not None and made not in kinds:
        raise ModelNotFoundError(f"{ref} (task {task}) is not {_nouns(kinds)}", _fix(kinds))
    # resolve_model looks in folders only when a kind a folder can be is wanted
    kind = made if made is not None else next(k for k in kinds if k in _FOLDER_KINDS)
    query, passage = _prefixes(meta)
    return ResolvedModel(ref, kind, "folder", folder, text_prefix=query, passage_prefix=passage)


def _registered(version: ModelVersion, kinds: tuple[Kind, ...]) -> ResolvedModel:
    kind = _KIND_OF_TASK.get(version.task)
    if version.task == "pretrain":  # an encoder (mlm) or a decoder (clm): its file says which
        meta = _read_meta(version.path)
        kind = meta.kind if isinstance(meta, PretrainMeta) else None
    if kind is None or kind not in kinds:  # the row's task is the authority, not the folder's
        raise ModelNotFoundError(
            f"{version.ref} (task {version.task}) is not {_nouns(kinds)}", _fix(kinds)
        )
    # only an encoder's prefixes matter to its callers; other kinds' folders are not read here
    query, passage = _prefixes(_read_meta(version.path) if kind == "encoder" else None)
    return ResolvedModel(
        version.ref,
        kind,
        "registry",
        version.path,
        version=version,
        text_prefix=query,
        passage_prefix=passage,
    )


def _is_registered_name(registry: Registry, ref: str) -> bool:
    try:
        name, _ = parse_ref(ref)
    except ModelNotFoundError:
        return False
    return bool(registry.list(name))


def _prefixes(meta: ModelMeta | None) -> tuple[str, str]:
    """The query and passage prefixes a model folder's lmforge.json records ("" when none)."""
    if isinstance(meta, SimilarityMeta):
        return meta.text_prefix, meta.passage
    query = meta.text_prefix if isinstance(meta, ClassificationMeta | PretrainMeta) else ""
    return query, query


def _read_meta(folder: Path) -> ModelMeta | None:
    """A model folder's metadata (None for a plain Hugging Face folder without lmforge.json)."""
    return read_model_meta(folder) if (folder / META_FILE).is_file() else None


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _either(kinds: tuple[Kind, ...]) -> str:
    """ "a decoder", "an encoder or a classifier"."""
    return " or ".join(_a(k) for k in kinds)


def _nouns(kinds: tuple[Kind, ...]) -> str:
    """ "a similarity model", "a similarity or classification model", "an assistant model"."""
    return f"{_a(' or '.join(KINDS[k] for k in kinds))} model"


def _catalogue_names(kinds: tuple[Kind, ...]) -> list[str]:
    return [e.name for e in CATALOGUE.values() if e.kind in kinds]


def _registered_fix(kinds: tuple[Kind, ...]) -> str:
    return f"use a version registered by {_a(' or '.join(KINDS[k] for k in kinds))} recipe"


def _fix(kinds: tuple[Kind, ...]) -> str:
    names = _catalogue_names(kinds)
    fix = _registered_fix(kinds)
    return f"{fix}, or one of: {', '.join(names)}" if names else fix


def _unknown(ref: str, kinds: tuple[Kind, ...], registered: bool, folders: bool) -> Exception:
    """ "unknown decoder 'x': not a catalogue decoder, a Hugging Face folder or a registered
    generation model — use one of: ..." (only the places that were searched)."""
    places = [f"a catalogue {' or '.join(k for k in kinds if k in _FOLDER_KINDS)}"]
    uses = [", ".join(_catalogue_names(kinds))]
    if folders:
        places.append("a Hugging Face folder")
        uses.append("a folder with config.json")
    if registered:
        tasks = " or ".join(KINDS[k] for k in kinds)
        places.append(f"a registered {tasks} model")
        uses.append(f"a NAME from `lmforge run` of {_a(tasks)} recipe")
    return ModelNotFoundError(
        f"unknown {' or '.join(kinds)} '{ref}': not {_listed(places, ' or')}",
        f"use one of: {_listed(uses, ', or')}",
    )


def _listed(items: list[str], conjunction: str) -> str:
    """ "a, b or c" (conjunction " or"), "a, b, or c" (conjunction ", or")."""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])}{conjunction} {items[-1]}"
