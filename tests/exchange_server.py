"""A Binance spot REST imitation on 127.0.0.1, for testing the live broker with the real ccxt client.

It speaks the wire format of the endpoints ccxt's `binance` class calls for spot trading
(`/api/v3/time`, `exchangeInfo`, `account`, `order` (POST/GET/DELETE), `openOrders`, `myTrades`):
HMAC-SHA256 signatures checked against the query string, the `X-MBX-APIKEY` header required on
signed endpoints, and Binance's error shapes (`{"code": -2013, "msg": "Order does not exist."}`
with status 400, 401 for a bad key, 429 for rate limits, 503 for an unavailable service).

Matching is deliberately simple: a market order fills at once at the symbol's last price; a
limit order fills at once when marketable (at the last price) or later when `set_price` crosses
it (at its limit). Buy commissions are taken in the base asset, sell commissions in the quote
asset, 0.1% each, as on Binance without BNB discounts. Balances move accordingly.

Faults are injected per request (`inject`): a delay after the order is recorded (the client
times out while the exchange has the order, as a real exchange can), an HTTP error status, or a
malformed body. Every request is recorded (`requests`) so tests can assert what was and was
not called, e.g. that nothing ever touched a withdrawal path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

COMMISSION = Decimal("0.001")
MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
OPEN = ("NEW", "PARTIALLY_FILLED")
SYMBOLS = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")}


@dataclass
class Fault:
    """One injected misbehaviour, consumed by the first request matching `method` and `path`.

    kind: 'delay_after' (handle the request normally, then sleep `delay_s` before answering),
    'status' (answer `status` with `body` without handling the request), 'malformed' (handle
    the request, then answer 200 with `body`, which is not what ccxt expects).
    """

    method: str
    path: str
    kind: str
    delay_s: float = 0.0
    status: int = 200
    body: str = ""


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


def _fmt(value: Decimal) -> str:
    return f"{value:.8f}"


class FakeBinance:
    """State of the imitated exchange plus its HTTP server; use as a context manager."""

    def __init__(self, api_key: str, secret: str, balances: dict[str, str] | None = None) -> None:
        self.api_key = api_key
        self.secret = secret
        self.lock = threading.Lock()
        self.balances: dict[str, list[Decimal]] = {  # asset -> [free, locked]
            asset: [Decimal(v), Decimal(0)] for asset, v in (balances or {"USDT": "10000", "BTC": "0"}).items()
        }
        self.prices: dict[str, Decimal] = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")}
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeBinance:
        handler = type("Handler", (_Handler,), {"exchange": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls -----------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def set_price(self, symbol_id: str, price: str) -> None:
        """Move the last price; resting limits that it crosses fill at their limit price."""
        with self.lock:
            self.prices[symbol_id] = Decimal(price)
            for order in self.orders.values():
                if order["symbol"] == symbol_id and order["status"] in OPEN:
                    limit = Decimal(order["price"])
                    if (order["side"] == "BUY" and self.prices[symbol_id] <= limit) or (
                        order["side"] == "SELL" and self.prices[symbol_id] >= limit
                    ):
                        self._fill(order, limit, maker=True)

    def fill_partially(self, client_order_id: str, quantity: str) -> None:
        """A counterparty takes `quantity` of a resting limit at its limit price."""
        with self.lock:
            [order] = [o for o in self.orders.values() if o["clientOrderId"] == client_order_id and o["status"] in OPEN]
            self._fill(order, Decimal(order["price"]), maker=True, qty=Decimal(quantity))

    def orders_with_client_id(self, client_order_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [o for o in self.orders.values() if o["clientOrderId"] == client_order_id]

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- matching ----------------------------------------------------------------------------
    def _fill(self, order: dict[str, Any], price: Decimal, maker: bool, qty: Decimal | None = None) -> None:
        base, quote = SYMBOLS[order["symbol"]]
        remaining = Decimal(order["origQty"]) - Decimal(order["executedQty"])
        qty = remaining if qty is None else min(qty, remaining)
        cost = qty * price
        if order["side"] == "BUY":
            commission, commission_asset = qty * COMMISSION, base
            if order["type"] == "LIMIT":
                self.balances[quote][1] -= qty * Decimal(order["price"])
                self.balances[quote][0] += qty * (Decimal(order["price"]) - price)
            else:
                self.balances[quote][0] -= cost
            self.balances.setdefault(base, [Decimal(0), Decimal(0)])[0] += qty - commission
        else:
            commission, commission_asset = cost * COMMISSION, quote
            if order["type"] == "LIMIT":
                self.balances[base][1] -= qty
            else:
                self.balances[base][0] -= qty
            self.balances[quote][0] += cost - commission
        order["executedQty"] = _fmt(Decimal(order["executedQty"]) + qty)
        order["cummulativeQuoteQty"] = _fmt(Decimal(order["cummulativeQuoteQty"]) + cost)
        order["status"] = "FILLED" if qty == remaining else "PARTIALLY_FILLED"
        order["updateTime"] = int(time.time() * 1000)
        self._next_id += 1
        self.trades.append({
            "symbol": order["symbol"], "id": self._next_id, "orderId": order["orderId"], "orderListId": -1,
            "price": _fmt(price), "qty": _fmt(qty), "quoteQty": _fmt(cost), "commission": _fmt(commission),
            "commissionAsset": commission_asset, "time": order["updateTime"], "isBuyer": order["side"] == "BUY",
            "isMaker": maker, "isBestMatch": True,
        })

    # -- endpoints (called with the lock held) -----------------------------------------------
    def new_order(self, p: dict[str, str]) -> tuple[int, Any]:
        symbol = p.get("symbol", "")
        if symbol not in SYMBOLS:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        client_id = p.get("newClientOrderId") or f"x-{self._next_id}"
        if any(o["clientOrderId"] == client_id and o["status"] in OPEN for o in self.orders.values()):
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        side, kind = p.get("side"), p.get("type")
        try:
            qty = Decimal(p["quantity"])
            limit = Decimal(p["price"]) if kind == "LIMIT" else None
        except (KeyError, ArithmeticError):
            return 400, {"code": -1102, "msg": MANDATORY.format("quantity")}
        if kind not in ("LIMIT", "MARKET") or side not in ("BUY", "SELL"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        base, quote = SYMBOLS[symbol]
        last = self.prices[symbol]
        need_asset, need = (quote, qty * (limit or last)) if side == "BUY" else (base, qty)
        if self.balances.get(need_asset, [Decimal(0)])[0] < need:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        self._next_id += 1
        now = int(time.time() * 1000)
        order = {
            "symbol": symbol, "orderId": self._next_id, "orderListId": -1, "clientOrderId": client_id,
            "price": _fmt(limit or Decimal(0)), "origQty": _fmt(qty), "executedQty": _fmt(Decimal(0)),
            "cummulativeQuoteQty": _fmt(Decimal(0)), "status": "NEW", "timeInForce": p.get("timeInForce", "GTC"),
            "type": kind, "side": side, "stopPrice": _fmt(Decimal(0)), "icebergQty": _fmt(Decimal(0)),
            "time": now, "updateTime": now, "isWorking": True, "workingTime": now,
            "origQuoteOrderQty": _fmt(Decimal(0)), "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        self.orders[order["orderId"]] = order
        if kind == "LIMIT":
            assert limit is not None
            self.balances[need_asset][0] -= need
            self.balances[need_asset][1] += need
            if (side == "BUY" and limit >= last) or (side == "SELL" and limit <= last):
                self._fill(order, last, maker=False)
        else:
            self._fill(order, last, maker=False)
        reply = {k: order[k] for k in order if k not in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty")}
        reply["transactTime"] = now
        reply["fills"] = [
            {"price": t["price"], "qty": t["qty"], "commission": t["commission"],
             "commissionAsset": t["commissionAsset"], "tradeId": t["id"]}
            for t in self.trades if t["orderId"] == order["orderId"]
        ]
        return 200, reply

    def find_order(self, p: dict[str, str]) -> dict[str, Any] | None:
        if "orderId" in p:
            order = self.orders.get(int(p["orderId"]))
            return order if order and order["symbol"] == p.get("symbol") else None
        matches = [o for o in self.orders.values() if o["clientOrderId"] == p.get("origClientOrderId")]
        return matches[-1] if matches and matches[-1]["symbol"] == p.get("symbol") else None

    def cancel_order(self, p: dict[str, str]) -> tuple[int, Any]:
        order = self.find_order(p)
        if order is None:
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        if order["status"] not in OPEN:
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        base, quote = SYMBOLS[order["symbol"]]
        remaining = Decimal(order["origQty"]) - Decimal(order["executedQty"])
        if order["side"] == "BUY":
            locked = remaining * Decimal(order["price"])
            self.balances[quote][1] -= locked
            self.balances[quote][0] += locked
        else:
            self.balances[base][1] -= remaining
            self.balances[base][0] += remaining
        order["status"] = "CANCELED"
        order["updateTime"] = int(time.time() * 1000)
        return 200, {**order, "origClientOrderId": order["clientOrderId"]}

    def account(self) -> dict[str, Any]:
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": int(time.time() * 1000),
            "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
            "balances": [{"asset": a, "free": _fmt(f), "locked": _fmt(lk)} for a, (f, lk) in self.balances.items()],
        }

    @staticmethod
    def exchange_info() -> dict[str, Any]:
        symbols = []
        for symbol_id, (base, quote) in SYMBOLS.items():
            symbols.append({
                "symbol": symbol_id, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
                     "tickSize": "0.01000000"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                     "stepSize": "0.00001000"},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [], "exchangeFilters": [],
                "symbols": symbols}


class _Handler(BaseHTTPRequestHandler):
    exchange: FakeBinance
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send(self, status: int, body: Any) -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): the order stays recorded

    def _handle(self, method: str) -> None:
        ex = self.exchange
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        signed_part = parts.query if method in ("GET", "DELETE") else body
        params = dict(parse_qsl(signed_part, keep_blank_values=True))
        with ex.lock:
            ex.requests.append(RecordedRequest(method, parts.path, params, dict(self.headers.items())))
            fault = next((f for f in ex.faults if f.method == method and f.path == parts.path), None)
            if fault is not None:
                ex.faults.remove(fault)
        if fault is not None and fault.kind == "status":
            self._send(fault.status, fault.body)
            return
        status, reply = self._route(method, parts.path, params, signed_part)
        if fault is not None and fault.kind == "delay_after":
            time.sleep(fault.delay_s)
        if fault is not None and fault.kind == "malformed":
            status, reply = 200, fault.body
        self._send(status, reply)

    def _route(self, method: str, path: str, params: dict[str, str], signed_part: str) -> tuple[int, Any]:
        ex = self.exchange
        public = {("GET", "/api/v3/time"), ("GET", "/api/v3/exchangeInfo"), ("GET", "/api/v3/ping")}
        if (method, path) in public:
            if path == "/api/v3/time":
                return 200, {"serverTime": int(time.time() * 1000)}
            if path == "/api/v3/ping":
                return 200, {}
            return 200, ex.exchange_info()
        if self.headers.get("X-MBX-APIKEY") != ex.api_key:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        payload, _, signature = signed_part.rpartition("&signature=")
        expected = hmac.new(ex.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        if "timestamp" not in params:
            return 400, {"code": -1102, "msg": MANDATORY.format("timestamp")}
        with ex.lock:
            if (method, path) == ("GET", "/api/v3/account"):
                return 200, ex.account()
            if (method, path) == ("POST", "/api/v3/order"):
                return ex.new_order(params)
            if (method, path) == ("GET", "/api/v3/order"):
                order = ex.find_order(params)
                return (200, dict(order)) if order else (400, {"code": -2013, "msg": "Order does not exist."})
            if (method, path) == ("DELETE", "/api/v3/order"):
                return ex.cancel_order(params)
            if (method, path) == ("GET", "/api/v3/openOrders"):
                symbol = params.get("symbol")
                return 200, [dict(o) for o in ex.orders.values()
                             if o["status"] in OPEN and (symbol is None or o["symbol"] == symbol)]
            if (method, path) == ("GET", "/api/v3/myTrades"):
                return 200, [dict(t) for t in ex.trades if t["symbol"] == params.get("symbol")
                             and ("orderId" not in params or str(t["orderId"]) == params["orderId"])]
        return 404, {"code": -1000, "msg": f"Unknown path {path}"}
