"""A picture that travels to the model with a tool's result (a screenshot) or with the task (a
file given with it), for models that see.

It is kept in the task's log with the result (base64, so the log stays JSON), and sent as an
image part by the backends whose model can see; the others send only the result's text, which
always says what the picture shows.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import BaseModel, ConfigDict

MediaType = Literal["image/png", "image/jpeg", "image/webp"]
#: the most bytes a picture may have: a model's image limit is a few MB, a log's row far less
MAX_BYTES = 400_000


class Image(BaseModel):
    model_config = ConfigDict(frozen=True)

    media_type: MediaType
    #: the picture's bytes, base64
    data: str

    @classmethod
    def of(cls, data: bytes, media_type: MediaType) -> Image:
        """Raises `ValueError` for a picture over MAX_BYTES."""
        if len(data) > MAX_BYTES:
            raise ValueError(f"a picture of {len(data):,} bytes is over {MAX_BYTES:,}")
        return cls(media_type=media_type, data=base64.b64encode(data).decode("ascii"))

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"
