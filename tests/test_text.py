"""Line readers for pipes and files: what has arrived from a pipe, full chunks from a file."""

from __future__ import annotations

import os
import threading

import pytest

from seq2seq.errors import UserError
from seq2seq.text import arriving_chunks, is_stream, line_chunks


def pipe_with(*writes: bytes, gap: threading.Event | None = None):
    """A read end of a pipe and a thread writing `writes` into it; `gap` is set after the first write."""
    read_fd, write_fd = os.pipe()

    def writer():
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            for number, data in enumerate(writes):
                out.write(data)
                if number == 0 and gap is not None:
                    gap.wait(10)  # hold the rest back until the reader has handed on the first part

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb", buffering=0), thread


def test_a_pipe_hands_on_what_has_arrived_without_waiting_for_more():
    first_seen = threading.Event()
    handle, thread = pipe_with(b"one\ntwo\n", b"three\n", gap=first_seen)
    with handle:
        reader = arriving_chunks(handle, "<pipe>", 1000)
        # The writer is blocked until this chunk is seen, so reading must not wait for chunk_lines.
        assert next(reader) == ["one", "two"]
        first_seen.set()
        assert list(reader) == [["three"]]
    thread.join(5)


def test_a_pipe_chunk_holds_at_most_size_lines_and_keeps_a_last_line_without_newline():
    handle, thread = pipe_with(b"a\nb\nc\r\nd\ne")
    with handle:
        chunks = list(arriving_chunks(handle, "<pipe>", 2))
    thread.join(5)
    assert [line for chunk in chunks for line in chunk] == ["a", "b", "c", "d", "e"]
    assert all(1 <= len(chunk) <= 2 for chunk in chunks)


def test_a_pipe_line_split_across_writes_stays_one_line():
    gap = threading.Event()
    handle, thread = pipe_with(b"half a ", b"line\nnext\n", gap=gap)
    gap.set()
    with handle:
        lines = [line for chunk in arriving_chunks(handle, "<pipe>", 10) for line in chunk]
    thread.join(5)
    assert lines == ["half a line", "next"]


def test_invalid_utf8_on_a_pipe_names_the_line():
    handle, thread = pipe_with(b"fine\nbad \xff byte\n")
    with handle, pytest.raises(UserError, match=r"<pipe>:2: invalid UTF-8"):
        list(arriving_chunks(handle, "<pipe>", 10))
    thread.join(5)


def test_a_file_keeps_full_chunks(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(7)))
    with open(path, "rb") as handle:
        assert not is_stream(handle)
        chunks = list(line_chunks(handle, str(path), 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert chunks[2] == ["line 6"]


def test_a_pipe_is_read_as_a_stream():
    handle, thread = pipe_with(b"x\n")
    with handle:
        assert is_stream(handle)
        assert list(line_chunks(handle, "<pipe>", 3)) == [["x"]]
    thread.join(5)
