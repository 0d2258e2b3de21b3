#!/bin/sh
# Loads the nftables ruleset of one router type into a router namespace of the test bed
# (spec/05-nat.md §7). Usage:
#
#   nat-router.sh TYPE NAMESPACE WAN_IF WAN_ADDR LAN_NET [TURN_ADDR:PORT ...]
#
# The LAN side is the interface `lan` (LAN_NET, e.g. 10.3.0.0/24). TYPE is one of:
#   full-cone           endpoint-independent mapping and filtering (RFC 4787 EIM + EIF)
#   address-restricted  EIM + address-dependent filtering
#   port-restricted     EIM + address-and-port-dependent filtering (plain masquerade)
#   symmetric           address-and-port-dependent mapping (masquerade fully-random) + APDF
#   symmetric-seq       APDM with sequential ports: every new UDP flow leaving the router
#                       takes the next port of 20000–24095 (a counter, `numgen inc`) + APDF
#   udp-blocked         no UDP out at all; TCP only to the TURN_ADDR:PORT endpoints
#                       (plain masquerade: port-preserving, replies only), nothing else
#   ipv6-firewall       IPv4 as port-restricted; IPv6 routed without NAT through a
#                       stateful firewall: inbound only for flows the inside opened
#   same-lan            port-restricted, two hosts on the LAN, no hairpinning (as Linux)
#   same-lan-hairpin    same-lan, plus hairpinning: a LAN host sending to WAN_ADDR:port of
#                       another LAN host's mapping reaches it, from WAN_ADDR:its own mapping
#
# Linux conntrack alone gives port-restricted behaviour: masquerade keeps the source port
# (EIM) and lets in only replies from the exact address and port contacted. Full cone and
# address-restricted need a dynamic map from each external port to the internal address and
# port, learnt from outbound packets and used to DNAT new inbound flows; address-restricted
# also keeps the set of (external port, remote address) pairs contacted and admits only those.
# Masquerade never allocates ports sequentially on this kernel: a port range makes it pick a
# pseudo-random port per source (and keep it: still EIM), hence the counter for symmetric-seq.
#
# Every router drops unsolicited input to its own WAN address: an early inbound packet would
# otherwise create a conntrack entry and masquerade would move the client off its port.
#
# Every router forgets a UDP mapping after 30 s of silence, answered or not (Linux keeps an
# answered flow 120 s; many home routers keep 30 s): keepalives must be well under that.
#
# Named counters (read with `nft list counter ip dnanat NAME` / `inet dnafw6 NAME`):
#   udp-blocked:   udp_out_dropped, other_out_dropped
#   ipv6-firewall: unsolicited_in (IPv6 from the WAN that no inside flow asked for)
set -eu

type=$1 ns=$2 wan=$3 wan_addr=$4 lan_net=$5
shift 5

case $type in
full-cone | address-restricted | port-restricted | symmetric | symmetric-seq | udp-blocked) ;;
ipv6-firewall | same-lan | same-lan-hairpin) ;;
*)
	echo "nat-router.sh: unknown router type '$type'" >&2
	exit 2
	;;
esac

masq=masquerade
[ "$type" = symmetric ] && masq="masquerade fully-random"
if [ "$type" = symmetric-seq ]; then
	ports=$(seq 0 4095 | awk '{ printf "%s%d : %d", (NR > 1 ? ", " : ""), $1, 20000 + $1 }')
	masq="meta l4proto udp snat ip to $wan_addr : numgen inc mod 4096 map { $ports }
		oifname \"$wan\" masquerade"
fi

# Full cone, address-restricted and the hairpin: the endpoint-independent map (and the
# contacted set).
map_decl= learn= dnat= hairpin=
case $type in full-cone | address-restricted | same-lan-hairpin)
	map_decl="map eim { type inet_service : ipv4_addr . inet_service; flags dynamic, timeout; timeout 30s; }
	set seen { type inet_service . ipv4_addr; flags dynamic, timeout; timeout 30s; }"
	learn="oifname \"$wan\" meta l4proto udp ct direction original update @eim { ct reply proto-dst : ct original ip saddr . ct original proto-src }
		oifname \"$wan\" meta l4proto udp ct direction original update @seen { ct reply proto-dst . ip daddr }"
	;;
esac
case $type in
full-cone) dnat="iifname \"$wan\" ip daddr $wan_addr dnat ip addr . port to udp dport map @eim" ;;
address-restricted) dnat="iifname \"$wan\" ip daddr $wan_addr udp dport . ip saddr @seen dnat ip addr . port to udp dport map @eim" ;;
same-lan-hairpin)
	# From the LAN to our own WAN address and a mapped port: to that mapping's host, with
	# the sender's own mapping as the source (RFC 4787 REQ-9).
	dnat="iifname \"lan\" ip daddr $wan_addr dnat ip addr . port to udp dport map @eim"
	hairpin="oifname \"lan\" ip saddr $lan_net ct status dnat snat ip to $wan_addr"
	;;
esac

# udp-blocked: what may leave from the LAN.
out_decl= out_rules=
if [ "$type" = udp-blocked ]; then
	turn=
	for ep in "$@"; do
		turn="$turn${turn:+, }${ep%:*} . ${ep##*:}"
	done
	[ -n "$turn" ] || {
		echo "nat-router.sh: udp-blocked needs TURN_ADDR:PORT" >&2
		exit 2
	}
	out_decl="counter udp_out_dropped { }
	counter other_out_dropped { }"
	out_rules="iifname \"lan\" meta l4proto udp counter name udp_out_dropped drop
		iifname \"lan\" ct state established,related accept
		iifname \"lan\" meta l4proto tcp ip daddr . tcp dport { $turn } accept
		iifname \"lan\" counter name other_out_dropped drop"
fi

ip netns exec "$ns" nft -f - <<NFT
flush ruleset
table ip dnanat {
	$map_decl
	$out_decl
	chain prerouting_nat {
		type nat hook prerouting priority dstnat; policy accept;
		$dnat
	}
	chain postrouting_nat {
		type nat hook postrouting priority srcnat; policy accept;
		$hairpin
		oifname "$wan" $masq
	}
	chain learn_mapping {
		type filter hook postrouting priority srcnat + 10; policy accept;
		$learn
	}
	chain forward_wan {
		type filter hook forward priority filter; policy accept;
		$out_rules
		iifname "$wan" ct state established,related accept
		iifname "$wan" ct status dnat accept
		iifname "$wan" drop
	}
	chain input_wan {
		type filter hook input priority filter; policy accept;
		iifname "$wan" ct state established,related accept
		iifname "$wan" drop
	}
}
NFT

if [ "$type" = ipv6-firewall ]; then
	# No NAT for IPv6: the inside's addresses are global. In from the WAN only what belongs
	# to a flow the inside opened (and the ICMPv6 errors about it); the router itself
	# answers neighbour discovery.
	ip netns exec "$ns" nft -f - <<NFT
table inet dnafw6 {
	counter unsolicited_in { }
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "$wan" meta nfproto ipv6 ct state established,related accept
		iifname "$wan" meta nfproto ipv6 counter name unsolicited_in drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "$wan" meta nfproto ipv6 ct state established,related accept
		iifname "$wan" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
		iifname "$wan" meta nfproto ipv6 drop
	}
}
NFT
fi

# The ruleset loaded conntrack into the namespace; now its UDP timeouts exist there.
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_udp_timeout=30
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream=30
