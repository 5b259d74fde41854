"""A map of 16-byte image fingerprints to floats whose memory is all taken when it is made.

The fetcher's two per-image maps (images known complete, the artifact checker's claims) hold up to
`fetcher.known_images` entries each. As dicts they grew with every new image, in the steps of their hash tables
doubling, until the cap: the soak's RSS rose that way for 70 minutes (docs/reliability.md). Here the table is sized
from the cap and written through once at start-up, so its pages are resident from the first event and nothing is
allocated per image: 25 bytes a slot, at least two slots per image of capacity (~67 bytes per image at the default
100,000), where the OrderedDict took ~150 bytes per image held and grew (bench.cache_memory).

Open addressing with linear probing over three flat arrays (keys, values, a state byte per slot), at most half
full so probes stay short; a removal shifts the following entries back (no tombstones to accumulate). Full, it
evicts by CLOCK, the usual approximation of least-recently-used: a read or a write marks the entry used, and the
hand sweeping the slots clears marks and evicts the first entry it finds unmarked.

The keys are BLAKE2b output (layerfill.kafka.keys.image_fingerprint): uniform, so their low bits are the slot.
Not thread-safe: callers hold their own lock, as with `Lru`."""

from __future__ import annotations

from array import array

KEY_BYTES = 16
_EMPTY, _HELD, _USED = 0, 1, 2  # a slot's state: free, held and not used since the hand passed, held and used
_PAGE = 4096


class FingerprintTable:
    """At most `maxsize` fingerprint -> float entries in memory fixed at construction."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        slots = 1 << max(3, (2 * maxsize - 1).bit_length())  # a power of two, at least twice the entries
        self._mask = slots - 1
        # bytearray(n) and array.frombytes write every byte, so all pages are resident now, not as entries arrive.
        self._keys = bytearray(slots * KEY_BYTES)
        self._values = array("d", bytes(slots * 8))
        self._state = bytearray(slots)
        self._hand = 0
        self._len = 0

    @property
    def nbytes(self) -> int:
        """The table's memory (its arrays' buffers)."""
        return len(self._keys) + self._values.itemsize * len(self._values) + len(self._state)

    def _find(self, key: bytes) -> int:
        """The slot holding `key`, or ~slot (negative) of the free slot where it would go."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"a fingerprint is {KEY_BYTES} bytes, got {len(key)}")
        keys, state, mask = self._keys, self._state, self._mask
        i = int.from_bytes(key, "little") & mask
        while state[i]:
            if keys.startswith(key, i * KEY_BYTES):  # compares in place: no slice is made
                return i
            i = (i + 1) & mask
        return ~i

    def get(self, key: bytes, default: float | None = None) -> float | None:
        # _find inlined: this is the firehose's per-event lookup.
        if len(key) != KEY_BYTES:
            raise ValueError(f"a fingerprint is {KEY_BYTES} bytes, got {len(key)}")
        keys, state, mask = self._keys, self._state, self._mask
        i = int.from_bytes(key, "little") & mask
        while state[i]:
            if keys.startswith(key, i * KEY_BYTES):
                state[i] = _USED
                return self._values[i]
            i = (i + 1) & mask
        return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes | bytearray) and self._find(key) >= 0  # a membership test is not a use

    def __setitem__(self, key: bytes, value: float) -> None:
        i = self._find(key)
        if i < 0:
            if self._len >= self.maxsize:
                self._evict()
                i = self._find(key)  # the eviction may have shifted entries into the free slot
            i = ~i
            at = i * KEY_BYTES
            self._keys[at : at + KEY_BYTES] = key
            self._len += 1
        self._values[i] = value
        self._state[i] = _USED

    def pop(self, key: bytes, default: float | None = None) -> float | None:
        i = self._find(key)
        if i < 0:
            return default
        value = self._values[i]
        self._remove(i)
        return value

    def __len__(self) -> int:
        return self._len

    def _evict(self) -> None:
        state, mask, hand = self._state, self._mask, self._hand
        while True:
            s = state[hand]
            if s == _HELD:
                break
            if s == _USED:
                state[hand] = _HELD  # a second chance: evicted if not used before the hand comes round again
            hand = (hand + 1) & mask
        self._hand = (hand + 1) & mask
        self._remove(hand)

    def _remove(self, i: int) -> None:
        """Free slot `i`, moving back each following entry of the probe run that may sit there, so that a lookup
        never meets a gap before its key."""
        keys, values, state, mask = self._keys, self._values, self._state, self._mask
        j = i
        while True:
            j = (j + 1) & mask
            if not state[j]:
                break
            at = j * KEY_BYTES
            home = int.from_bytes(keys[at : at + KEY_BYTES], "little") & mask
            if (j - home) & mask >= (j - i) & mask:  # its home is at or before i on the way to j: it may move to i
                to = i * KEY_BYTES
                keys[to : to + KEY_BYTES] = keys[at : at + KEY_BYTES]
                values[i], state[i] = values[j], state[j]
                i = j
        state[i] = _EMPTY
        self._len -= 1
