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


class Counting(WrappingInterceptor):
    """Counts how often it is asked to wrap (the pipeline should ask once per method)."""

    def __init__(self) -> None:
        self.wraps = 0

    def wrap(self, handler: Any, handler_call_details: Any) -> Any:
        self.wraps += 1
        return handler if handler is None else wrap_handler(handler, lambda behavior: behavior)


class OtherDetails:
    method = "/svc/Other"
    invocation_metadata = ()


async def test_a_methods_wrapped_handler_is_built_once_and_reused() -> None:
    counting = Counting()
    pipeline = InterceptorPipeline([counting])
    handler = grpc.unary_unary_rpc_method_handler(_app)

    async def continuation(_details: Any) -> grpc.RpcMethodHandler:
        return handler

    first = await pipeline.intercept_service(continuation, Details())
    second = await pipeline.intercept_service(continuation, Details())
    assert first is second
    assert counting.wraps == 1
    await pipeline.intercept_service(continuation, OtherDetails())
    assert counting.wraps == 2  # another method, its own wrapped handler


async def test_a_new_handler_for_the_method_is_wrapped_afresh() -> None:
    counting = Counting()
    pipeline = InterceptorPipeline([counting])

    async def fresh_each_time(_details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(_app)

    first = await pipeline.intercept_service(fresh_each_time, Details())
    second = await pipeline.intercept_service(fresh_each_time, Details())
    assert first is not second
    assert counting.wraps == 2
    assert await second.unary_unary(b"", None) == "answer"


async def test_unknown_methods_are_never_cached() -> None:
    seen: list[str] = []
    pipeline = InterceptorPipeline([Tracing("a", seen)])

    async def continuation(_details: Any) -> None:
        return None

    for _ in range(2):
        assert await pipeline.intercept_service(continuation, Details()) is None
    assert seen == ["a:unknown", "a:unknown"]
