"""The inspectors' workbench: server-rendered pages over the same queries as the JSON API.

Each page calls what its JSON endpoint calls (the worklist held in memory, the provider's
view, the case routes), so a page and an answer never disagree and no query is written
twice; the pages only choose the words (French, Dutch or English) and the layout. Pages need
no script: links carry the filters (a worklist URL can be shared), forms post with a CSRF
token, charts are SVG drawn on the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import formats
from api.auth import Unauthorized, token_hash
from api.charts import HEIGHT, WIDTH, marker, peer_svg, span
from api.dependencies import NIHDI, PROVIDER, Session, admitted_hash
from api.documents import render, texts
from api.feedback import INDICATORS, feedback_profile, kind_of, peer_values
from api.formats import LANGUAGES, Lang, formatter
from api.hardening import PAGE_POLICY
from api.narrative import case_facts, named_contributions, narrative
from api.queries import NotPublished
from api.routes.cases import CaseChange, CaseOpen, change_case, get_case, list_cases, open_case
from api.routes.providers import claim_lines, provider_view, worklist_of
from api.web.session import LANG_COOKIE, SESSION_COOKIE, SIGNIN_COOKIE, Cookies
from api.worklist import SORT_KEYS, Filters
from rules import load_catalog

router = APIRouter(include_in_schema=False)
# The pages live under their own prefix: the JSON API keeps its paths (/providers, /cases).
ROOT = "/workbench"
PAGE_SIZE = 25
# What each role may open in the workbench, as in the API.
PAGES = {"worklist": ("inspector", "data_scientist"), "cases": ("inspector",), "claims": ("inspector",)}
CLAIMS_PAGE = 50
PURPOSE_CHARS = (10, 500)  # as the API's purpose


def _cookies(request: Request) -> Cookies:
    cookies: Cookies = request.app.state.cookies
    return cookies


def language(request: Request, lang: str | None = None) -> Lang:
    """The page's language: asked for (``?lang=``), then the one chosen before (a cookie), then
    the browser's first choice among French, Dutch and English (``Accept-Language``)."""
    for choice in (lang, request.cookies.get(LANG_COOKIE)):
        if choice in LANGUAGES:
            return choice  # type: ignore[return-value]
    weighted = []
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        weighted.append((weight, tag.split("-")[0].lower()))
    for _, tag in sorted(weighted, key=lambda w: -w[0]):
        if tag in LANGUAGES:
            return tag  # type: ignore[return-value]
    return "en"


class SignIn(Exception):
    """No valid session: the page sends the browser to the sign-in page."""


async def signed_in(request: Request) -> Session:
    """The session of the request's cookie; :class:`SignIn` without one, or when its token no
    longer admits anyone (revoked, expired)."""
    hashed = _cookies(request).token_hash(request)
    if hashed is None:
        raise SignIn
    state = request.app.state
    try:
        found = await admitted_hash(state.passes, state.engine, hashed)
    except HTTPException:
        raise SignIn from None
    return Session(found.caller, found.newest_run, state.engine, state.worklists, state.pseudonym_key)


Signed = Annotated[Session, Depends(signed_in)]


def page(request: Request, template: str, session: Session | None, lang: Lang, **context: Any) -> HTMLResponse:
    """A workbench page in ``lang``, with the navigation the caller's role allows."""
    cookies = _cookies(request)
    allowed = [name for name in PAGES if session and _may(session, name)]
    switch = {
        other: request.url.path + "?" + urlencode({**dict(request.query_params), "lang": other}) for other in LANGUAGES
    }
    html = render(
        f"web/{template}",
        lang,
        w=render_words(lang),
        caller=session.caller if session else None,
        allowed=allowed,
        csrf=cookies.csrf(request) if session else "",
        switch=switch,
        root=ROOT,
        moment=lambda at: f"{formats.day(at.date(), lang)} {at:%H:%M}",
        moment_day=lambda day: formats.day(date.fromisoformat(str(day)[:10]), lang),
        **context,
    )
    response = HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY})
    if request.query_params.get("lang") in LANGUAGES:
        cookies.set(response, request, LANG_COOKIE, lang, max_age=365 * 24 * 3600)
    return response


def render_words(lang: Lang) -> dict[str, Any]:
    """The workbench's words in ``lang`` (``texts.yaml``, under ``web``)."""
    words: dict[str, Any] = texts()[lang]["web"]
    return words


def refused(request: Request, session: Session, lang: Lang, message: str, code: int) -> HTMLResponse:
    answer = page(request, "message.html", session, lang, message=message)
    answer.status_code = code
    return answer


N = TypeVar("N", int, float)


def _typed(text: str | None, kind: type[N]) -> N | None:
    """A number typed in a form: empty is none; a decimal comma is read as a point."""
    if text is None or not text.strip():
        return None
    try:
        value = kind(text.strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if value < 0:
        raise ValueError(f"'{text}' is below zero")
    return value


def _links(request: Request) -> tuple[dict[str, str], Callable[..., str]]:
    """The page's query (but its page number and language) and a maker of links to the same
    page with some of it changed: a filtered, sorted page stays shareable as it is paged."""
    shown = {k: v for k, v in request.query_params.items() if k not in ("page", "lang") and v != ""}

    def link(**changes: Any) -> str:
        return f"{request.url.path}?" + urlencode({**shown, **{k: v for k, v in changes.items() if v is not None}})

    return shown, link


def _may(session: Session, name: str) -> bool:
    return session.caller.role == "admin" or session.caller.role in PAGES[name]


def _forbidden(request: Request, session: Session, lang: Lang, name: str) -> HTMLResponse | None:
    """The 403 page when the caller's role may not open ``name`` (of ``PAGES``); None when it may."""
    if _may(session, name):
        return None
    return refused(request, session, lang, render_words(lang)["not_allowed"], status.HTTP_403_FORBIDDEN)


@router.get("/")
def home(request: Request) -> RedirectResponse:
    """The worklist for a signed-in caller, else the sign-in page."""
    target = f"{ROOT}/worklist" if _cookies(request).token_hash(request) else "/signin"
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.get("/signin")
def signin_form(request: Request, lang: str | None = None, failed: str | None = None) -> HTMLResponse:
    chosen = language(request, lang)
    cookies = _cookies(request)
    # There is no session yet: the form's token is tied to a cookie set with the form.
    nonce = request.cookies.get(SIGNIN_COOKIE) or cookies.nonce()
    form_csrf = cookies.form_token(SIGNIN_COOKIE, nonce)
    response = page(request, "signin.html", None, chosen, signin_csrf=form_csrf, failed=failed)
    cookies.set(response, request, SIGNIN_COOKIE, nonce, max_age=3600)
    return response


@router.post("/signin")
async def signin(
    request: Request, token: Annotated[str, Form(max_length=256)] = "", csrf: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """Exchange a token for a session cookie (the token itself is never stored)."""
    cookies = _cookies(request)
    cookies.check_csrf(request, csrf, SIGNIN_COOKIE)
    hashed = token_hash(token.strip())
    state = request.app.state
    try:
        await admitted_hash(state.passes, state.engine, hashed)
    except (HTTPException, Unauthorized) as refused_token:
        reason = refused_token.detail if isinstance(refused_token, HTTPException) else str(refused_token)
        return RedirectResponse("/signin?" + urlencode({"failed": reason}), status.HTTP_303_SEE_OTHER)
    response = RedirectResponse(f"{ROOT}/worklist", status.HTTP_303_SEE_OTHER)
    cookies.set(response, request, SESSION_COOKIE, cookies.session(hashed))
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@router.post("/signout")
def signout(request: Request, session: Signed, csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    _cookies(request).check_csrf(request, csrf)
    response = RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get(f"{ROOT}/worklist")
async def worklist(
    request: Request,
    session: Signed,
    lang: str | None = None,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    profession: Annotated[str | None, Query(max_length=32)] = None,
    region: Annotated[str | None, Query(max_length=8)] = None,
    insurer: Annotated[str | None, Query(max_length=3)] = None,
    year: Annotated[str | None, Query(max_length=4)] = None,
    min_score: Annotated[str | None, Query(max_length=20)] = None,
    min_amount: Annotated[str | None, Query(max_length=20)] = None,
    min_persistence: Annotated[str | None, Query(max_length=3)] = None,
    sort: Annotated[str, Query(pattern="^(" + "|".join(SORT_KEYS) + ")$")] = "amount",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """Flagged providers of a run with the API's filters, sortable and paged; the URL holds them."""
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "worklist"):
        return forbidden
    try:
        filters = Filters(
            rule=rule or None,
            profession=profession or None,
            region=region or None,
            insurer=insurer or None,
            year=_typed(year, int),
            min_score=_typed(min_score, float),
            min_amount=_typed(min_amount, float),
            min_persistence=_typed(min_persistence, int),
        )
    except ValueError as wrong:
        return refused(request, session, chosen, str(wrong), status.HTTP_422_UNPROCESSABLE_ENTITY)
    try:
        run, held = await worklist_of(session, run_id or None)
    except HTTPException as missing:
        return refused(request, session, chosen, str(missing.detail), missing.status_code)
    total, items = held.page(filters, sort, order, page_number, PAGE_SIZE)
    shown, link = _links(request)

    catalog = load_catalog()
    return page(
        request,
        "worklist.html",
        session,
        chosen,
        run=run,
        total=total,
        rows=[json.loads(item) for item in items],
        number_of_page=page_number,
        pages=max(1, -(-total // PAGE_SIZE)),
        sort=sort,
        order=order,
        values=shown,
        link=link,
        rules=[(r.id, r.titles[chosen]) for r in catalog],
        titles={r.id: r.titles[chosen] for r in catalog},
    )


@router.get(f"{ROOT}/providers/{{nihdi}}")
def provider_page(
    request: Request,
    session: Signed,
    nihdi: Annotated[str, PROVIDER],
    lang: str | None = None,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    period: Annotated[str | None, Query(pattern=r"^[0-9]{4}(Q[1-4])?$")] = None,
) -> HTMLResponse:
    """A provider: peer group, flags per rule with legal basis, score and its explanation in
    the page's language, each indicator against the peer distribution, and the cases."""
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "worklist"):
        return forbidden
    try:
        view = provider_view(session, nihdi, run_id or None)
    except HTTPException as missing:
        return refused(request, session, chosen, str(missing.detail), missing.status_code)
    number = view["provider_nihdi"] if not session.pseudonymous else None
    # What only the provider's number can look up (the profile charts, the narrative) is
    # looked up for those who may see it; a data scientist sees the scores and flags.
    profile = facts = None
    if number is not None:
        with session.read() as connection:
            try:
                profile = feedback_profile(connection, number, view["run_id"], period)
                facts = case_facts(connection, number, view["run_id"])
            except NotPublished:
                pass
    catalog = load_catalog()
    indicators = []
    if profile:
        # The peers' chart is an image the browser keeps for the whole peer group; only the
        # provider's line is drawn here.
        where = f"{ROOT}/charts/{profile['run_id']}/{profile['period']}"
        query = urlencode({"group": profile["peer_group"], "lang": chosen})
        for indicator in profile["indicators"]:
            show = formatter(indicator["kind"], chosen)
            shown = span(indicator["peer_values"], indicator["peer_median"])
            indicators.append(
                {
                    **indicator,
                    "shown": show(indicator["value"]),
                    "median_shown": show(indicator["peer_median"]),
                    "chart": f"{where}/{indicator['feature']}.svg?{query}",
                    "marker": marker(indicator["value"], shown),
                }
            )
    rules = []
    for flagged in view["flags_by_rule"]:
        rule = catalog.rule(flagged["rule_id"])
        rules.append({**flagged, "title": rule.titles[chosen], "why": rule.why and rule.why[chosen]})
    return page(
        request,
        "provider.html",
        session,
        chosen,
        v=view,
        rules=rules,
        profile=profile,
        indicators=indicators,
        story=narrative(facts, chosen) if facts else [],
        named=named_contributions,
        frame=(WIDTH, HEIGHT),
    )


@router.get(f"{ROOT}/charts/{{run_id}}/{{period}}/{{feature}}.svg")
def peer_chart(
    request: Request,
    session: Signed,
    run_id: Annotated[str, Path(max_length=64)],
    period: Annotated[str, Path(pattern=r"^[0-9]{4}(Q[1-4])?$")],
    feature: Annotated[str, Path(max_length=64)],
    group: Annotated[str, Query(max_length=256)],
    lang: str | None = None,
) -> Response:
    """The peers' chart of an indicator in a peer group and period of a run, without any
    provider's line: the same image for every member, so the browser keeps it (a run's
    results never change)."""
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "worklist"):
        return forbidden
    if feature not in INDICATORS:
        return refused(request, session, chosen, f"No indicator {feature}", status.HTTP_404_NOT_FOUND)
    try:
        with session.read() as connection:
            run = session.run(connection, run_id)
            values = peer_values(connection, run, period, group)[feature]
    except HTTPException as missing:
        return refused(request, session, chosen, str(missing.detail), missing.status_code)
    if not len(values):
        message = f"No peer group {group} in period {period} of run {run}"
        return refused(request, session, chosen, message, status.HTTP_404_NOT_FOUND)
    svg = peer_svg(tuple(values.tolist()), float(np.median(values)), kind_of(feature), chosen)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=86400"})


@router.get(f"{ROOT}/providers/{{nihdi}}/claims")
def claims_page(
    request: Request,
    session: Signed,
    nihdi: Annotated[str, NIHDI],
    lang: str | None = None,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    case_id: Annotated[str | None, Query(max_length=10)] = None,
    purpose: Annotated[str | None, Query(max_length=PURPOSE_CHARS[1])] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    """A provider's flagged lines with their evidence, read like the API's: within a case the
    caller works on or for a stated purpose, and audited with it. Without either, the page
    asks why."""
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "claims"):
        return forbidden
    case = int(case_id) if case_id and case_id.isdigit() else None
    stated = (purpose or "").strip() or None
    asked = {"rule": rule or "", "run_id": run_id or ""}
    if case is None and (stated is None or len(stated) < PURPOSE_CHARS[0]):
        mine = list_cases(session, None, nihdi, 1, 200)["items"]  # type: ignore[arg-type]
        short = stated is not None
        return page(request, "purpose.html", session, chosen, nihdi=nihdi, cases=mine, asked=asked, short=short)
    try:
        found = claim_lines(session, nihdi, run_id or None, rule or None, case, stated, page_number, CLAIMS_PAGE)
    except HTTPException as failed:
        return refused(request, session, chosen, str(failed.detail), failed.status_code)
    catalog = load_catalog()
    _, link = _links(request)

    return page(
        request,
        "claims.html",
        session,
        chosen,
        nihdi=nihdi,
        found=found,
        titles={r.id: r.titles[chosen] for r in catalog},
        case_id=case,
        purpose=stated,
        number_of_page=page_number,
        pages=max(1, -(-found["total"] // CLAIMS_PAGE)),
        link=link,
    )


@router.post(f"{ROOT}/cases")
def open_case_form(
    request: Request,
    session: Signed,
    provider_nihdi: Annotated[str, Form(pattern=r"^[0-9]{11}$")],
    csrf: Annotated[str, Form(max_length=64)] = "",
    notes: Annotated[str, Form(max_length=10_000)] = "",
    run_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Open a case from the provider page (the API's ``POST /cases``)."""
    _cookies(request).check_csrf(request, csrf)
    chosen = language(request)
    if forbidden := _forbidden(request, session, chosen, "cases"):
        return forbidden
    try:
        case = open_case(session, CaseOpen(provider_nihdi=provider_nihdi, notes=notes, run_id=run_id or None))
    except HTTPException as failed:
        return refused(request, session, chosen, str(failed.detail), failed.status_code)
    return RedirectResponse(f"{ROOT}/cases/{case['id']}", status.HTTP_303_SEE_OTHER)


@router.get(f"{ROOT}/cases")
def cases_page(
    request: Request,
    session: Signed,
    lang: str | None = None,
    case_status: Annotated[str | None, Query(alias="status", pattern="^(open|investigating|closed)?$")] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "cases"):
        return forbidden
    found = list_cases(session, case_status or None, None, page_number, PAGE_SIZE)  # type: ignore[arg-type]
    return page(request, "cases.html", session, chosen, found=found, status_filter=case_status or "")


@router.get(f"{ROOT}/cases/{{case_id}}")
def case_page(request: Request, session: Signed, case_id: int, lang: str | None = None) -> HTMLResponse:
    chosen = language(request, lang)
    if forbidden := _forbidden(request, session, chosen, "cases"):
        return forbidden
    try:
        case = get_case(session, case_id)
    except HTTPException as missing:
        return refused(request, session, chosen, str(missing.detail), missing.status_code)
    return page(request, "case.html", session, chosen, case=case, error=request.query_params.get("error"))


@router.post(f"{ROOT}/cases/{{case_id}}")
def change_case_form(
    request: Request,
    session: Signed,
    case_id: int,
    csrf: Annotated[str, Form(max_length=64)] = "",
    case_status: Annotated[str | None, Form(alias="status")] = None,
    outcome: Annotated[str | None, Form()] = None,
    amount_to_recover_eur: Annotated[str | None, Form()] = None,
    notes: Annotated[str | None, Form(max_length=10_000)] = None,
) -> Response:
    """Move a case along (the API's ``PATCH /cases/{id}``); a refused change is shown on the case."""
    _cookies(request).check_csrf(request, csrf)
    chosen = language(request)
    if forbidden := _forbidden(request, session, chosen, "cases"):
        return forbidden
    try:
        amount = _typed(amount_to_recover_eur, float)
        change = CaseChange(
            status=case_status or None,  # type: ignore[arg-type]
            outcome=outcome or None,  # type: ignore[arg-type]
            amount_to_recover_eur=amount,
            notes=notes or None,
        )
        change_case(session, case_id, change)
    except HTTPException as failed:
        return _back(case_id, str(failed.detail))
    except RequestValidationError as failed:
        return _back(case_id, "; ".join(str(e.get("msg", e)) for e in failed.errors()))
    except ValueError as failed:  # the amount, or what the form's fields do not allow
        return _back(case_id, str(failed).splitlines()[0])
    return RedirectResponse(f"{ROOT}/cases/{case_id}", status.HTTP_303_SEE_OTHER)


def _back(case_id: int, error: str) -> RedirectResponse:
    return RedirectResponse(f"{ROOT}/cases/{case_id}?" + urlencode({"error": error}), status.HTTP_303_SEE_OTHER)
