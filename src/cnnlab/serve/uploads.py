"""What a client sends, checked before the model sees it: the body's size (counted while it
arrives, so an oversized body is refused before it is read whole), its content type, and each
image decoded with cnnlab's own decoder and pixel budget (a decompression bomb is refused from its
header, as `cnnlab predict` refuses it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

# Content types of a raw body (or of a form's file) that may hold an image; the decoder decides.
IMAGE_TYPES = ("image/",)
OPAQUE_TYPES = frozenset({"", "application/octet-stream", "application/dicom", "binary/octet-stream"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than --max-body-bytes {limit:,}")


async def read_body(receive: Any, max_body_bytes: int) -> bytes:
    """The request's body from the ASGI `receive`; BodyTooLarge as soon as its bytes pass the limit
    (a chunked body, or one lying about its Content-Length, is never read whole)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise BodyTooLarge(max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ClientGone(Exception):
    """The client disconnected before its request's body arrived: nobody is left to answer."""


def counting_receive(receive: Any, max_body_bytes: int) -> Any:
    """`receive`, raising BodyTooLarge once the body's bytes pass the limit (for endpoints that read
    the body through Starlette)."""
    received = 0

    async def counting() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise BodyTooLarge(max_body_bytes)
        return message

    return counting


def declared_too_large(headers: list[tuple[bytes, bytes]], max_body_bytes: int) -> bool:
    """Whether the request's Content-Length alone is over the limit (refused before reading a byte)."""
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) > max_body_bytes
    return False


@dataclass
class Upload:
    name: str  # the form's file name, or "upload" for a raw body
    data: bytes


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _is_image_type(media_type: str) -> bool:
    return media_type.startswith(IMAGE_TYPES) or media_type in OPAQUE_TYPES


async def read_uploads(request: Request, *, max_files: int) -> list[Upload]:
    """The images in a multipart form (every file field) or a raw image body; 415 for anything else."""
    content_type = request.headers.get("content-type")
    _refuse_other_types(content_type)
    uploads = uploads_in_body(content_type, await request.body(), max_files)
    return uploads if uploads is not None else await _parsed_form(request, max_files)


def uploads_in_body(content_type: str | None, body: bytes, max_files: int) -> list[Upload] | None:
    """The images of a body already read: a raw image, or the usual multipart form (`curl -F
    file=@x.png`: a few parts, plain headers), split in one pass over the bytes. None for any other
    form, which Starlette's streaming parser reads (`read_uploads`); 415/422 as `read_uploads`."""
    media_type = _refuse_other_types(content_type)
    if media_type == "multipart/form-data":
        boundary = _boundary(content_type or "")
        simple = simple_form(body, boundary) if boundary is not None else None
        return _checked_uploads(simple) if simple is not None and len(simple) <= max_files else None
    if not body:
        raise HTTPException(422, "the request holds no image (an empty body)")
    return [Upload("upload", body)]


def _refuse_other_types(content_type: str | None) -> str:
    """The media type; 415 unless it is multipart, an image type or opaque bytes."""
    media_type = _media_type(content_type)
    if media_type != "multipart/form-data" and media_type and not _is_image_type(media_type):
        raise HTTPException(415, f"Content-Type {media_type} is not an image: send image/* or "
                                 "application/octet-stream bytes, or multipart/form-data with image files")
    return media_type


async def _parsed_form(request: Request, max_files: int) -> list[Upload]:
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=max_files, max_fields=max_files + 16)
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    parts = [(file.filename, file.content_type, await file.read()) for file in files]
    await form.close()
    return _checked_uploads(parts)


def _checked_uploads(files: list[tuple[str | None, str | None, bytes]]) -> list[Upload]:
    """(file name, content type, bytes) of a form's files as uploads; 422 for none, 415 for a non-image."""
    if not files:
        raise HTTPException(422, "the form holds no file: send each image as a file field (e.g. -F file=@x.png)")
    uploads = []
    for number, (filename, content_type, data) in enumerate(files, start=1):
        name = filename or f"file-{number}"
        media_type = _media_type(content_type)
        if not _is_image_type(media_type):
            raise HTTPException(415, f"{name} is {media_type}, not an image")
        uploads.append(Upload(name, data))
    return uploads


_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]{1,70})"|([^;\s"]{1,70}))', re.IGNORECASE)
_DISPOSITION = re.compile(r'^form-data(?:;\s*(name|filename)="([^"\\]*)")*\s*$', re.IGNORECASE)
_FILENAME = re.compile(r';\s*filename="([^"\\]*)"', re.IGNORECASE)
_PLAIN_HEADERS = frozenset({"content-disposition", "content-type"})


def _boundary(content_type: str) -> bytes | None:
    found = _BOUNDARY.search(content_type)
    return (found.group(1) or found.group(2)).encode("latin-1") if found else None


def simple_form(body: bytes, boundary: bytes) -> list[tuple[str, str | None, bytes]] | None:
    """The file parts of a multipart/form-data `body` as (file name, content type, bytes), when the
    form is the usual kind: no preamble, each part with only Content-Disposition (form-data, quoted
    name and filename without escapes) and Content-Type headers, a closing delimiter. None for any
    other form (escapes, filename*=, other headers, a missing end), which the full parser reads."""
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        return None
    parts = body[len(delimiter) + 2:].split(b"\r\n" + delimiter)
    if len(parts) < 2 or not parts[-1].startswith(b"--"):
        return None
    files = []
    for index, part in enumerate(parts[:-1]):
        if index > 0:  # the CRLF after every delimiter but the first (already skipped)
            if not part.startswith(b"\r\n"):
                return None
            part = part[2:]
        head, separator, data = part.partition(b"\r\n\r\n")
        if not separator:
            return None
        headers = _plain_headers(head)
        if headers is None or not _DISPOSITION.match(headers.get("content-disposition", "")):
            return None
        filename = _FILENAME.search(headers["content-disposition"])
        if filename is not None:  # a file; other fields (text) are not images and are left out, as before
            files.append((filename.group(1), headers.get("content-type"), data))
    return files


def _plain_headers(head: bytes) -> dict[str, str] | None:
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or name not in _PLAIN_HEADERS or name in headers:
            return None
        headers[name] = value.strip()
    return headers


def decode(upload: Upload, input_spec: Any, max_pixels: int) -> tuple[Any, tuple[int, int, bool]]:
    """uint8 (C, H, W) pixels at the model's input and (width, height, colour) in the upload, as
    `cnnlab predict` decodes a file; UnreadableImageError (the reason) when it is not an image."""
    from pathlib import PurePath

    from cnnlab.data.images import IMAGE_SUFFIXES, load_image_bytes_and_origin

    name = PurePath(upload.name).name or "upload"
    if PurePath(name).suffix.lower() not in IMAGE_SUFFIXES:  # the decoder picks DICOM and PNG by suffix
        name += ".png" if upload.data.startswith(PNG_SIGNATURE) else ""
    return load_image_bytes_and_origin(upload.data, name, channels=input_spec.channels, size=input_spec.size,
                                       fit=input_spec.fit, max_pixels=max_pixels)
