"""One pipeline runs wrapping interceptors in the same order a chain of them would."""

from __future__ import annotations

from typing import Any

import grpc

from meshlib.grpc_errors import InterceptorPipeline, WrappingInterceptor, wrap_handler
from meshlib.server import _as_pipeline


class Tracing(WrappingInterceptor):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def wrap(self, handler: Any, handler_call_details: Any) -> Any:
        if handler is None:
            self.seen.append(f"{self.name}:unknown")
            return None

        def around(behavior: Any) -> Any:
            async def unary(request: Any, context: Any) -> Any:
                self.seen.append(f"{self.name}>")
                try:
                    return await behavior(request, context)
                finally:
                    self.seen.append(f"<{self.name}")

            return unary

        return wrap_handler(handler, around)


class Details:
    method = "/svc/Method"
    invocation_metadata = ()


async def _app(request: Any, context: Any) -> str:
    return "answer"


async def test_the_first_stage_is_the_outermost_as_in_a_chain() -> None:
    seen: list[str] = []
    pipeline = InterceptorPipeline([Tracing("outer", seen), Tracing("middle", seen), Tracing("inner", seen)])

    async def continuation(_details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(_app)

    handler = await pipeline.intercept_service(continuation, Details())
    assert await handler.unary_unary(b"", None) == "answer"
    assert seen == ["outer>", "middle>", "inner>", "<inner", "<middle", "<outer"]


async def test_every_stage_hears_of_an_unknown_method() -> None:
    seen: list[str] = []
    pipeline = InterceptorPipeline([Tracing("a", seen), Tracing("b", seen)])

    async def continuation(_details: Any) -> None:
        return None

    assert await pipeline.intercept_service(continuation, Details()) is None
    assert seen == ["b:unknown", "a:unknown"]


def test_other_interceptors_keep_their_place_between_pipelines() -> None:
    seen: list[str] = []

    class Plain(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
            return await continuation(handler_call_details)

    plain = Plain()
    chain = _as_pipeline([Tracing("a", seen), Tracing("b", seen), plain, Tracing("c", seen)])
    assert [type(stage) for stage in chain] == [InterceptorPipeline, Plain, InterceptorPipeline]
    assert chain[1] is plain
