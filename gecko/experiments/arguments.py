"""argparse types for the drivers' counts and rates: a bad value is refused before any
work starts, with the flag's own usage line (`--seeds 0` is not "every passage")."""

from __future__ import annotations

import argparse
import math


def at_least(minimum: int):
  """An argparse type: an int >= `minimum`."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value
  parse.__name__ = f"int >= {minimum}"
  return parse


def positive_float(text: str) -> float:
  """An argparse type: a finite float > 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not (math.isfinite(value) and value > 0):
    raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
  return value


def named_number(names):
  """An argparse type: 'NAME=VALUE' -> (NAME, VALUE), NAME one of `names`, VALUE a
  finite number >= 0."""
  def parse(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in names:
      raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of "
                                       f"{', '.join(names)}, got {text!r}")
    try:
      number = float(value)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r}: VALUE must be a number") from None
    if not (math.isfinite(number) and number >= 0):
      raise argparse.ArgumentTypeError(f"{text!r}: VALUE must be a finite number >= 0")
    return name, number
  parse.__name__ = "NAME=VALUE"
  return parse
