"""In-memory forums that answer the forum sources' requests as GitHub's GraphQL API and a
Discourse forum would: `requests.Session` stand-ins for tests that change a forum between runs
(the wire format itself is pinned by the cassettes in test_github_discussions and
test_discourse)."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from pythia.sources import github_discussions as gd


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body).encode()
    answer.headers.update({"Content-Type": "application/json", **(headers or {})})
    return answer


class FakeGitHub:
    """One repository's Discussions, answering the four queries of
    `sources.github_discussions` (categories, list, discussion, replies)."""

    def __init__(self, categories: tuple[str, ...] = ("General", "Q&A")) -> None:
        self.categories = [
            {"id": f"DIC_{n}", "name": name, "slug": name.lower().replace("&", "")}
            for n, name in enumerate(categories)
        ]
        self.discussions: dict[int, dict[str, Any]] = {}
        self.queries: list[str] = []
        self._ids = 5000

    # --- changing the forum ---------------------------------------------------------------

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def discuss(
        self, number: int, *, title: str, body: str, login: str, at: datetime, category: str = "Q&A"
    ) -> dict[str, Any]:
        discussion = {
            "id": f"D_{number}",
            "databaseId": self._next(),
            "number": number,
            "title": title,
            "body": body,
            "url": f"https://github.com/kestrel/docs/discussions/{number}",
            "createdAt": iso(at),
            "updatedAt": iso(at),
            "answerChosenAt": None,
            "author": {
                "__typename": "User",
                "login": login,
                "databaseId": zlib.crc32(login.encode()) % 10_000,
            },
            "answer": None,
            "category": category,
            "comments": [],
        }
        self.discussions[number] = discussion
        return discussion

    def comment(
        self,
        number: int,
        *,
        body: str,
        login: str,
        at: datetime,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        database_id = self._next()
        comment = {
            "id": f"DC_{database_id}",
            "databaseId": database_id,
            "url": f"https://github.com/kestrel/docs/discussions/{number}#discussioncomment-{database_id}",
            "body": body,
            "createdAt": iso(at),
            "isAnswer": False,
            "isMinimized": False,
            "minimizedReason": None,
            "deletedAt": None,
            "author": {
                "__typename": "User",
                "login": login,
                "databaseId": zlib.crc32(login.encode()) % 10_000,
            },
            "replies": [],
        }
        discussion = self.discussions[number]
        (reply_to["replies"] if reply_to else discussion["comments"]).append(comment)
        discussion["updatedAt"] = iso(at)
        return comment

    def choose_answer(self, number: int, comment: dict[str, Any], at: datetime) -> None:
        discussion = self.discussions[number]
        comment["isAnswer"] = True
        discussion.update(answer={"id": comment["id"]}, answerChosenAt=iso(at), updatedAt=iso(at))

    def edit(self, number: int, item: dict[str, Any], body: str, at: datetime) -> None:
        item["body"] = body
        self.discussions[number]["updatedAt"] = iso(at)

    # --- answering ------------------------------------------------------------------------

    def close(self) -> None:
        pass

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        payload = kwargs["json"]
        query, variables = payload["query"], payload["variables"]
        self.queries.append(query)
        if query == gd.CATEGORIES:
            repository = {
                "hasDiscussionsEnabled": True,
                "discussionCategories": {"nodes": self.categories},
            }
            return response({"data": {"repository": repository}})
        if query == gd.LIST:
            return response({"data": {"repository": {"discussions": self._list(variables)}}})
        if query == gd.DISCUSSION:
            found = self.discussions.get(variables["number"])
            if found is None:  # as GitHub answers for a deleted discussion
                return response(
                    {
                        "data": {"repository": {"discussion": None}},
                        "errors": [
                            {
                                "type": "NOT_FOUND",
                                "path": ["repository", "discussion"],
                                "message": "Could not resolve to a Discussion with the "
                                f"number of {variables['number']}.",
                            }
                        ],
                    }
                )
            body = self._discussion(found, variables)
            return response({"data": {"repository": {"discussion": body}}})
        raise AssertionError(f"unexpected query {query[:60]!r}")

    def _list(self, variables: dict[str, Any]) -> dict[str, Any]:
        names = {c["id"]: c["name"] for c in self.categories}
        wanted = names.get(variables.get("category") or "")
        found = sorted(
            (d for d in self.discussions.values() if wanted is None or d["category"] == wanted),
            key=lambda d: d["updatedAt"],
            reverse=True,
        )
        return page(
            [{k: d[k] for k in ("number", "createdAt", "updatedAt")} for d in found],
            variables["first"],
            variables.get("after"),
        )

    def _discussion(self, found: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        comments = page(found["comments"], variables["comments"], variables.get("after"))
        comments["nodes"] = [
            {**c, "replies": page(c["replies"], variables["replies"], None)}
            for c in comments["nodes"]
        ]
        body = {k: v for k, v in found.items() if k not in ("category", "comments")}
        return {**body, "comments": comments}


def page(items: list[Any], first: int, after: str | None) -> dict[str, Any]:
    start = int(after) if after else 0
    chosen = items[start : start + first]
    more = start + first < len(items)
    return {
        "pageInfo": {"hasNextPage": more, "endCursor": str(start + first) if more else None},
        "nodes": chosen,
    }


class FakeDiscourse:
    """A public Discourse forum: /latest.json, /t/{id}.json and /t/{id}/posts.json."""

    def __init__(self, site: str = "https://discuss.kestrel.dev") -> None:
        self.site = site
        self.topics: dict[int, dict[str, Any]] = {}
        self.paths: list[str] = []
        self._post_ids = 700

    def topic(
        self, topic_id: int, *, title: str, raw: str, user: int, at: datetime
    ) -> dict[str, Any]:
        topic = {
            "id": topic_id,
            "title": title,
            "slug": title.lower().replace(" ", "-"),
            "created_at": iso(at),
            "last_posted_at": iso(at),
            "bumped_at": iso(at),
            "pinned": False,
            "posts": [],
        }
        self.topics[topic_id] = topic
        self.post(topic_id, raw=raw, user=user, at=at)
        return topic

    def post(
        self, topic_id: int, *, raw: str, user: int, at: datetime, reply_to: int | None = None
    ) -> dict[str, Any]:
        self._post_ids += 1
        topic = self.topics[topic_id]
        post = {
            "id": self._post_ids,
            "username": f"user{user}",
            "user_id": user,
            "created_at": iso(at),
            "updated_at": iso(at),
            "raw": raw,
            "cooked": f"<p>{raw}</p>",
            "post_number": len(topic["posts"]) + 1,
            "post_type": 1,
            "reply_to_post_number": reply_to,
            "hidden": False,
            "deleted_at": None,
            "user_deleted": False,
            "accepted_answer": False,
            "topic_accepted_answer": False,
        }
        topic["posts"].append(post)
        topic.update(last_posted_at=iso(at), bumped_at=iso(at))
        return post

    def accept(self, topic_id: int, post: dict[str, Any]) -> None:
        """The Solved plugin's mark: no new post, no bump."""
        for other in self.topics[topic_id]["posts"]:
            other["topic_accepted_answer"] = True
        post["accepted_answer"] = True

    def close(self) -> None:
        pass

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        path = urlsplit(url).path
        params = kwargs.get("params") or {}
        self.paths.append(path)
        if path == "/latest.json":
            listed = sorted(self.topics.values(), key=lambda t: t["bumped_at"], reverse=True)
            start = int(params.get("page", 0)) * 2
            chosen = listed[start : start + 2]
            more = start + 2 < len(listed)
            topics = [{k: v for k, v in t.items() if k != "posts"} for t in chosen]
            topic_list = {"topics": topics, "more_topics_url": "/latest?page=1" if more else None}
            return response({"users": [], "topic_list": topic_list})
        parts = path.strip("/").removesuffix(".json").split("/")
        topic = self.topics.get(int(parts[1]))
        if topic is None:
            return response({"errors": ["not found"], "error_type": "not_found"}, status=404)
        if len(parts) == 2:
            posts = topic["posts"][:2]  # a small chunk, so the rest goes through posts.json
            body = {k: v for k, v in topic.items() if k != "posts"}
            stream = {"posts": posts, "stream": [p["id"] for p in topic["posts"]]}
            return response({**body, "post_stream": stream})
        wanted = {int(i) for i in parse_qs(urlsplit(url).query).get("post_ids[]", [])}
        wanted |= {int(i) for i in params.get("post_ids[]", [])}
        posts = [p for p in topic["posts"] if p["id"] in wanted]
        return response({"post_stream": {"posts": posts}, "id": topic["id"]})
