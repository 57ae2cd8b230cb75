"""Calculator-augmented chain of thought (Cobbe et al. 2021, "Training Verifiers to Solve Math Word
Problems", whose GSM8K rationales annotate arithmetic as ``<<48/2=24>>24``).

The demonstrations keep the annotations. While decoding, each time the model writes ``=`` inside
an open ``<<``, generation pauses, the expression e is evaluated exactly by ``safe_eval`` and
"=" + value(e) + ">>" is appended; generation then resumes from the extended text:

    text <- text + decode(prompt + text, stop="=")        (repeat, at most max_calls times)
    text <- text + "=" + value(<<e) + ">>"                 when "<<" is open
    y* = extract(text after "The answer is")

``safe_eval`` never calls eval/exec: it parses with ``ast`` and walks only numbers, + - * / //
% ** and unary +/-, on exact fractions, refusing anything too long, too deep or whose result
would exceed MAX_BITS (checked *before* computing, so ``9**9**9`` returns at once)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from adaptlab.extract import format_number
from adaptlab.prompting.common import Prediction, parse
from adaptlab.prompting.cot import CoT
from adaptlab.tasks import Task

MAX_CHARS = 200        # expression length
MAX_NODES = 64         # AST nodes
MAX_DEPTH = 16         # AST nesting
MAX_BITS = 400         # |numerator|, denominator of every value (~120 decimal digits)
MAX_EXP = 1024         # |integer exponent|

_BIN = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


class _Refuse(Exception):
    pass


def _bits(x: Fraction) -> int:
    return max(abs(x.numerator).bit_length(), x.denominator.bit_length())


def _check(x: Fraction) -> Fraction:
    if _bits(x) > MAX_BITS:
        raise _Refuse
    return x


def _binop(op, a: Fraction, b: Fraction) -> Fraction:
    if isinstance(op, (ast.Add, ast.Sub)):
        return _check(a + b if isinstance(op, ast.Add) else a - b)
    if isinstance(op, (ast.Mult, ast.Div)):
        if _bits(a) + _bits(b) > MAX_BITS + 1:        # a product's size is bounded by the sum
            raise _Refuse
        if isinstance(op, ast.Div) and b == 0:
            raise _Refuse
        return _check(a * b if isinstance(op, ast.Mult) else a / b)
    if isinstance(op, (ast.FloorDiv, ast.Mod)):
        if b == 0:
            raise _Refuse
        return _check(Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b)
    # Pow: integer exponents only, result size estimated before computing
    if b.denominator != 1 or abs(b.numerator) > MAX_EXP or (a == 0 and b < 0):
        raise _Refuse
    if _bits(a) * abs(b.numerator) > MAX_BITS and abs(a) != 1:
        raise _Refuse
    return _check(a ** b.numerator)


def _eval(node, depth: int) -> Fraction:
    if depth > MAX_DEPTH:
        raise _Refuse
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand, depth + 1)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BIN):
        return _binop(node.op, _eval(node.left, depth + 1), _eval(node.right, depth + 1))
    raise _Refuse


def normalize_expr(expr: str) -> str:
    """'1,200 × 3' -> '1200 * 3'; '$5' -> '5'; '÷' -> '/'; '−' -> '-'."""
    e = expr.replace("×", "*").replace("÷", "/").replace("−", "-").replace("$", "")
    e = re.sub(r"(?<=\d),(?=\d{3}\b)", "", e)
    return re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", e).strip()


def safe_eval(expr: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None when it is not one we accept."""
    if not isinstance(expr, str) or len(expr) > MAX_CHARS:
        return None
    e = normalize_expr(expr)
    if not e or len(e) > MAX_CHARS:
        return None
    try:
        tree = ast.parse(e, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        return None
    try:
        return _eval(tree.body, 0)
    except (_Refuse, ValueError, OverflowError, ZeroDivisionError, RecursionError):
        return None


def format_value(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else format_number(float(x))


@dataclass
class Calculator(CoT):
    name = "calculator"
    max_calls: int = 8                  # calculator uses per input

    def rationale(self, text: str) -> str:
        return " ".join(text.split())   # keep the <<expr=value>> annotations

    def predict(self, lm, task: Task, examples: list[dict]) -> list[Prediction]:
        prompts = [self.render(task, ex, lm) for ex in examples]
        texts = [""] * len(examples)
        calls = [0] * len(examples)
        stop = [*self.stop(task), "="]
        budget = self.budget(task)
        active = list(range(len(examples)))
        for _ in range(self.max_calls + 1):
            # ~4 characters per token: what is left of each input's budget
            left = [max(1, budget - len(texts[i]) // 4) for i in active]
            outs = lm.generate([prompts[i] + texts[i] for i in active], n=1, max_new_tokens=max(left),
                               temperature=0.0, stop=stop)
            why = getattr(lm, "finish_reasons", None) or [[None]] * len(active)
            still = []
            for i, o, w, room in zip(active, outs, why, left):
                texts[i] += o[0]
                if w[0] != "=" or room <= 1:
                    continue
                k, closed = texts[i].rfind("<<"), texts[i].rfind(">>")
                value = safe_eval(texts[i][k + 2:]) if k > closed else None
                if value is not None:
                    texts[i] += "=" + format_value(value) + ">>"
                    calls[i] += 1
                else:
                    texts[i] += "="
                still.append(i)
            active = still
            if not active:
                break
        return [Prediction(prediction=parse(task, ex, t, "last"), prompt=p, raw=t, extra={"calculator_calls": c})
                for p, ex, t, c in zip(prompts, examples, texts, calls)]
