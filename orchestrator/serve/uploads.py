"""Reading the photos of one request: the multipart form field `image` (repeatable), under a size limit.

Every refusal is a `BadRequest`: an HTTP status and one sentence for the person or program that sent it.
The body is counted while it streams in, so an upload over the limit is refused without being kept,
whatever its Content-Length says.
"""

from __future__ import annotations

from starlette.formparsers import MultiPartException, MultiPartParser

FIELD = "image"
MAX_UPLOAD_BYTES = 8 * 2**20  # a request's whole body: several face photos, never a dataset
MAX_FILES = 16


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def too_large(limit: int) -> BadRequest:
    return BadRequest(413, f"The upload is over this server's limit of {limit / 2**20:g} MiB per request; "
                           "send smaller photos or fewer at once.")


async def read_form(request, limit: int = MAX_UPLOAD_BYTES):
    """The request's form, read with `limit` on its body and MAX_FILES on its files."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(400, f"Send the photos as multipart/form-data in the field '{FIELD}' "
                              f"(for example: curl -F {FIELD}=@face.jpg URL).")

    async def body():
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            yield chunk

    try:
        return await MultiPartParser(request.headers, body(), max_files=MAX_FILES, max_fields=16).parse()
    except MultiPartException as err:
        raise BadRequest(400, f"The form could not be read ({err.message.rstrip('.')}); "
                              f"send at most {MAX_FILES} photos as multipart/form-data.") from None


async def uploaded_images(form) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file in the field `image`, in the order sent."""
    files = [value for value in form.getlist(FIELD) if hasattr(value, "read")]
    if not files:
        raise BadRequest(400, f"The form has no photo in the field '{FIELD}'; send one or more as {FIELD}=@face.jpg.")
    return [(upload.filename or f"photo {i + 1}", await upload.read()) for i, upload in enumerate(files)]
